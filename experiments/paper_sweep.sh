#!/usr/bin/env bash
# The paper-style sweep on a GPU: CIFAR-10, every matching method x IPC {1, 10, 50} x risk
# {none, cvar} x seeds 0-2 with the published budgets (src/rdd/conf/experiment/ overlays, DESIGN.md),
# evaluated on the cross-architecture pool, then one report over everything.
#   experiments/paper_sweep.sh [OUT_DIR] [extra Hydra overrides, e.g. logger=wandb]
# MTT needs its expert buffers first (made here, once per risk: robust experts for cvar).
# Each stage is one Hydra multirun; a stage can be rerun alone by copying its command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ROOT=${CIFAR10_ROOT:-data/cifar10}
OUT=${1:-logs/experiments/paper_sweep/$(date +%Y-%m-%d_%H-%M-%S)}
shift $(( $# > 0 ? 1 : 0 ))
COMMON=(data.root="$ROOT" eval=cross_arch risk=none,cvar seed=0,1,2 "$@")

# DC and DSA: the published loops per IPC come from the matching config; 1000 iterations.
"$PY" -m rdd.run -m experiment=dc_cifar10,dsa_cifar10 ipc=1,10,50 "${COMMON[@]}" \
    hydra.sweep.dir="$OUT/dc_dsa"
# DM and IDM (IDM's per-IPC overlays carry their own settings).
"$PY" -m rdd.run -m experiment=dm_cifar10 ipc=1,10,50 "${COMMON[@]}" hydra.sweep.dir="$OUT/dm"
"$PY" -m rdd.run -m experiment=idm_cifar10_ipc1,idm_cifar10_ipc10,idm_cifar10_ipc50 \
    "${COMMON[@]}" hydra.sweep.dir="$OUT/idm"
# MTT: 100 experts x 50 epochs per buffer, then the distillation. risk=cvar acts on networks,
# so its runs look for (and this makes) a buffer of robust experts; IPC does not change a buffer.
for risk in none cvar; do
    "$PY" -m rdd.buffer experiment=mtt_cifar10_ipc10 data.root="$ROOT" risk=$risk "$@"
done
"$PY" -m rdd.run -m experiment=mtt_cifar10_ipc1,mtt_cifar10_ipc10,mtt_cifar10_ipc50 \
    "${COMMON[@]}" hydra.sweep.dir="$OUT/mtt"
# Baselines and the whole-dataset reference (the reference trains on all 45,000 images).
"$PY" -m rdd.run -m data=cifar10 matching=random,herding ipc=1,10,50 "${COMMON[@]}" \
    hydra.sweep.dir="$OUT/coresets"
"$PY" -m rdd.run -m data=cifar10 matching=full eval.epochs=300 data.root="$ROOT" \
    eval=cross_arch seed=0,1,2 "$@" hydra.sweep.dir="$OUT/full"
"$PY" -m rdd.report "$OUT" out="$OUT/report"
