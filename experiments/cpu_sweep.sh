#!/usr/bin/env bash
# The reduced-budget sweep that runs on a CPU: CIFAR-10, IPC 1, dc / dsa / random x risk
# none / cvar x seeds 0-2 (18 runs), then its report (table and plots).
#   experiments/cpu_sweep.sh [OUT_DIR] [extra Hydra overrides]
# Budget (what makes it fit a 2-core CPU): a width-32 ConvNet-3, 10 outer iterations with 64
# real images per class, evaluation 2 networks x 50 epochs with DSA, and the nine corruptions
# at severity 3 only (scoring 48 shifted CIFAR-10 test sets took ~7 min per run here, more
# than the rest of the run). Every other metric is kept: clean, mean/worst cluster, worst
# class, noise / blur / invert. Random ignores the risk: its cvar rows equal its none rows by
# construction (same seeds, same networks), a check on the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${CIFAR10_ROOT:-../shared/data/cifar10-jpeg}
OUT=${1:-logs/experiments/cpu_sweep/$(date +%Y-%m-%d_%H-%M-%S)}
shift $(( $# > 0 ? 1 : 0 ))
COMMON=(data=cifar10 data.root="$ROOT" net=convnet_w32 ipc=1 risk=none,cvar seed=0,1,2
        eval.epochs=50 eval.num_nets=2 "eval.severities=[3]"
        trainer.enable_progress_bar=false logger=csv "$@")
"$PY" -m rdd.run -m matching=dc,dsa matching.iterations=10 matching.batch_real=64 \
    "${COMMON[@]}" hydra.sweep.dir="$OUT/runs/distilled"
"$PY" -m rdd.run -m matching=random "${COMMON[@]}" hydra.sweep.dir="$OUT/runs/random"
"$PY" -m rdd.report "$OUT/runs" out="$OUT/report"
