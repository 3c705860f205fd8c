#!/usr/bin/env bash
# Rare-subgroup benchmark (issue 13): CIFAR-10 with 5% of every class's training images altered
# (SUBGROUP: grayscale by default, or invert / blur); DM, IDM and DSA at IPC 10, risk none / cvar
# / max_group, seeds 0-2; one evaluation network per run (std over the distillation seeds),
# scored on the test set as it is and fully altered (worst_group_acc: the lower of the two).
#
#   benchmarks/subgroup_shift/run.sh <cifar10 root> [out dir] [extra overrides...]
#   benchmarks/subgroup_shift/run.sh ../shared/data/cifar10-jpeg
#   .venv/bin/python benchmarks/subgroup_shift/collect.py benchmarks/subgroup_shift/runs
#
# CPU budget (2 cores): ConvNet-3 width 32; DM 100 iterations, IDM 10, DSA 2 (its published
# loops at IPC 10, 128 real images per class per step); evaluation 1 net x 300 epochs with DSA,
# no shifted/corrupted sets. A finished run (metrics.json) is skipped, so the script resumes.
# METHODS, RISKS, SEEDS (environment) narrow the sweep, e.g. METHODS="dm" SEEDS="0".
set -euo pipefail
root=${1:?give the CIFAR-10 root, e.g. ../shared/data/cifar10-jpeg}
subgroup=${SUBGROUP:-grayscale}
out=${2:-benchmarks/subgroup_shift/runs/$subgroup}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
common=(data=cifar10 "data.root=$root" "data.subgroup=$subgroup" net=convnet_w32 ipc=10
        eval.num_nets=1 eval.epochs=300 eval.shifts=[] eval.corruptions=[]
        logger=csv checkpoint_every=0 trainer.enable_progress_bar=false)
declare -A budget=(
  [dm]="matching.iterations=100"
  [idm]="matching.iterations=10"
  [dsa]="matching.iterations=2 matching.batch_real=128"
)
for method in ${METHODS:-dm idm dsa}; do
  for seed in ${SEEDS:-0 1 2}; do
    for risk in ${RISKS:-none cvar max_group}; do
      dir="$out/${method}_${risk}_s${seed}${TAG:-}"
      [[ -f $dir/metrics.json ]] && continue
      rm -rf "$dir"  # an unfinished attempt
      echo "$(date +%T) $method $risk seed $seed -> $dir"
      # shellcheck disable=SC2086
      "$python" -m rdd.run "${common[@]}" matching=$method risk=$risk seed=$seed \
        ${budget[$method]} "$@" "hydra.run.dir=$dir" > /dev/null 2> "$dir.log" \
        || { echo "failed: see $dir.log"; continue; }
      rm -f "$dir.log"
    done
  done
done
