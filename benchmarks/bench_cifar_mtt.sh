#!/usr/bin/env bash
# CIFAR-10 at IPC 10 with ZCA: MTT against a random real subset under the same evaluation
# (2 nets x 100 epochs with DSA, the same ZCA-whitened data), on a CPU budget: a width-32
# ConvNet-3, a short buffer (3 experts x 5 epochs) and 100 MTT iterations of 20 student
# steps from start epochs 0-2. Everything else is the published CIFAR-10 IPC 10 setting.
#   benchmarks/bench_cifar_mtt.sh [extra Hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${CIFAR10_ROOT:-../shared/data/cifar10-jpeg}
OUT=logs/bench_cifar_mtt/$(date +%Y-%m-%d_%H-%M-%S)
COMMON=(data=cifar10 data.root="$ROOT" data.zca=true net=convnet_w32 ipc=10
        experts.num_experts=3 experts.epochs=5
        eval.epochs=100 eval.num_nets=2 trainer.enable_progress_bar=false logger=none "$@")
MTT=(matching=mtt matching.iterations=100 matching.syn_steps=20 matching.max_start_epoch=3)
/usr/bin/time -v "$PY" -m rdd.buffer "${COMMON[@]}" "${MTT[@]}" hydra.run.dir="$OUT/buffer" \
  2> >(tee "$OUT.buffer.time" >&2)
"$PY" -m rdd.run "${COMMON[@]}" matching=random hydra.run.dir="$OUT/random"
"$PY" -m rdd.run "${COMMON[@]}" "${MTT[@]}" hydra.run.dir="$OUT/mtt"
"$PY" benchmarks/aggregate_runs.py "$OUT" --by matching.name
