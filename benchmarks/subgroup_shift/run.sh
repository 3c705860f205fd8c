#!/usr/bin/env bash
# Rare-subgroup benchmark (issue 24): CIFAR-10 with 5% of every class's training images altered
# (SUBGROUPS: grayscale, invert, blur), IPC 10, three arms per method and seed:
#   none        risk=none (the base method, bit for bit)
#   discovered  risk=$RISK with nothing else: the subgroups a user gets by default
#   known       risk=$RISK clustering=known: the known subgroup as the groups (an oracle)
# Two evaluation networks per set, scored on the test set as it is and fully altered
# (worst_group_acc: the lower of the two).
#
#   benchmarks/subgroup_shift/run.sh <cifar10 root> [out dir] [extra overrides...]
#   benchmarks/subgroup_shift/run.sh ../shared/data/cifar10-jpeg
#   .venv/bin/python benchmarks/subgroup_shift/collect.py benchmarks/subgroup_shift/runs_owned
#
# CPU budget (2 cores): ConvNet-3 width 32; DM 100 iterations, IDM 10, DSA 2 (its published
# loops at IPC 10, 128 real images per class per step), MTT 100 (a buffer of 2 experts x 4
# epochs, made first by rdd.buffer with the run's overrides: risk=cvar trains robust experts,
# so each arm has its own; starts at epochs 0-1, RDD_BUFFER_DIR says where); evaluation 2 nets
# x 300 epochs with DSA, no shifted/corrupted sets. A finished run (metrics.json) is skipped, so the script resumes.
# SUBGROUPS, METHODS, ARMS, SEEDS, RISK (environment) narrow or change the sweep.
set -euo pipefail
root=${1:?give the CIFAR-10 root, e.g. ../shared/data/cifar10-jpeg}
out=${2:-benchmarks/subgroup_shift/runs_owned}
shift $(( $# >= 2 ? 2 : 1 ))
python=${PYTHON:-.venv/bin/python}
risk=${RISK:-cvar}
common=(data=cifar10 "data.root=$root" net=convnet_w32 ipc=10
        eval.num_nets=2 eval.epochs=300 eval.shifts=[] eval.corruptions=[]
        logger=csv checkpoint_every=0 trainer.enable_progress_bar=false print_config=false)
declare -A budget=(
  [dm]="matching.iterations=100"
  [idm]="matching.iterations=10"
  [dsa]="matching.iterations=2 matching.batch_real=128"
  [mtt]="matching.iterations=100 matching.max_start_epoch=2 experts.num_experts=2 experts.epochs=4"
)
declare -A arm_overrides=(
  [none]="risk=none"
  [discovered]="risk=$risk"
  [known]="risk=$risk clustering=known"
)
for subgroup in ${SUBGROUPS:-grayscale invert blur}; do
  for method in ${METHODS:-dm idm}; do
    for seed in ${SEEDS:-0 1 2}; do
      for arm in ${ARMS:-none discovered known}; do
        dir="$out/$subgroup/${method}_${arm}_s${seed}${TAG:-}"
        [[ -f $dir/metrics.json ]] && continue
        rm -rf "$dir"  # an unfinished attempt
        mkdir -p "$(dirname "$dir")"
        echo "$(date +%T) $subgroup $method $arm seed $seed -> $dir"
        # shellcheck disable=SC2086
        if [[ $method == mtt ]]; then  # its expert trajectories first (kept if made before)
          # seed: robust experts re-cluster with the run's seed (clustering.seed), so it keys them
          "$python" -m rdd.buffer "${common[@]}" "data.subgroup=$subgroup" matching=$method \
            seed=$seed ${arm_overrides[$arm]} ${budget[$method]} "$@" "hydra.run.dir=$dir.buffer" \
            > /dev/null 2> "$dir.log" || { echo "buffer failed: see $dir.log"; continue; }
        fi
        # shellcheck disable=SC2086
        "$python" -m rdd.run "${common[@]}" "data.subgroup=$subgroup" matching=$method \
          seed=$seed ${arm_overrides[$arm]} ${budget[$method]} "$@" "hydra.run.dir=$dir" \
          > /dev/null 2> "$dir.log" || { echo "failed: see $dir.log"; continue; }
        rm -f "$dir.log"
      done
    done
  done
done
