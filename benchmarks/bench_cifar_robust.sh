#!/usr/bin/env bash
# CIFAR-10: risk=cvar against risk=none, same seeds, on a budget that fits a CPU.
# DSA, IPC 1, 20 outer iterations with 128 real images per class, evaluation 2 ConvNet-3 x 100
# epochs; the cvar runs cluster each class into k=3 FAISS k-means subgroups (embedding features).
#   benchmarks/bench_cifar_robust.sh [extra Hydra overrides]
# Writes a multirun under logs/bench_cifar_robust/ and prints the table
# (benchmarks/aggregate_runs.py) of test, mean-cluster and worst-cluster accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${CIFAR10_ROOT:-../shared/data/cifar10-jpeg}
SWEEP=logs/bench_cifar_robust/$(date +%Y-%m-%d_%H-%M-%S)
"$PY" -m rdd.run -m data=cifar10 data.root="$ROOT" matching=dsa ipc=1 \
    risk=none,cvar seed=0,1,2 \
    matching.iterations=20 matching.batch_real=128 \
    eval.epochs=100 eval.num_nets=2 \
    trainer.enable_progress_bar=false \
    hydra.sweep.dir="$SWEEP" "$@"
"$PY" benchmarks/aggregate_runs.py "$SWEEP" --by risk.name
