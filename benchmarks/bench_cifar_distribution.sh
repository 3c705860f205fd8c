#!/usr/bin/env bash
# CIFAR-10 at IPC 10: DM and IDM against a random real subset, under the same evaluation
# (2 ConvNet-3 x 100 epochs with DSA) and one seed, on a CPU budget: DM 30 iterations, IDM 10
# (each IDM iteration also trains two queue networks 10 steps). Everything else is published.
#   benchmarks/bench_cifar_distribution.sh [extra Hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${CIFAR10_ROOT:-../shared/data/cifar10-jpeg}
OUT=logs/bench_cifar_distribution/$(date +%Y-%m-%d_%H-%M-%S)
COMMON=(data=cifar10 data.root="$ROOT" ipc=10 eval.epochs=100 eval.num_nets=2
        trainer.enable_progress_bar=false logger=none "$@")
"$PY" -m rdd.run "${COMMON[@]}" matching=random hydra.run.dir="$OUT/random"
"$PY" -m rdd.run "${COMMON[@]}" matching=dm matching.iterations=30 hydra.run.dir="$OUT/dm"
"$PY" -m rdd.run "${COMMON[@]}" matching=idm matching.iterations=10 hydra.run.dir="$OUT/idm"
"$PY" benchmarks/aggregate_runs.py "$OUT" --by matching.name
