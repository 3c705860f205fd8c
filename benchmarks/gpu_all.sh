#!/usr/bin/env bash
# Every benchmark of issue 17 on one device, results in one folder (benchmarks/README.md,
# "Ready for the GPU"):
#
#   benchmarks/gpu_all.sh [--quick | --tiny] [--device cuda] [--out DIR] [--only NAMES] \
#       [--vico DIR] [--idm DIR] [--mtt DIR]
#
#   --quick   a budget that fits in about 8 minutes on one H200 (default: the full tables)
#   --tiny    a smoke budget for a CPU (minutes here): every benchmark runs, no figure means much
#   --device  cpu, cuda, cuda:N or auto (default auto: the GPU where there is one)
#   --out     results folder (default benchmarks/results/gpu-<date>); one <name>.txt per
#             benchmark, sync_points.json, env.txt and summary.md (every table, with the
#             command, its exit status and seconds)
#   --only    a comma list of benchmark names (sync_points, dc_iteration, dsa_iteration,
#             dm_iteration, idm_iteration, mtt_syn_steps, eval_speed, vs_reference): run these
#             alone, for a lease too short for all (default: every one)
#   --vico / --idm / --mtt   reference checkouts for benchmarks/bench_vs_reference.py (skipped,
#             with a line saying so, when that script or every path is missing)
#
# Each benchmark runs under `timeout` (STEP_TIMEOUT seconds, default 900; 240 with --quick)
# and a failure does not stop the others: summary.md records its exit status.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore

# The reference paths are *_dir: the budget arrays below are named idm and mtt.
budget=full device=auto out="" vico_dir="" idm_dir="" mtt_dir="" only=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) budget=quick ;;
        --tiny) budget=tiny ;;
        --device) device=$2; shift ;;
        --out) out=$2; shift ;;
        --vico) vico_dir=$2; shift ;;
        --idm) idm_dir=$2; shift ;;
        --mtt) mtt_dir=$2; shift ;;
        --only) only=,$2,; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$device" = auto ]; then
    device=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
fi
out=${out:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
summary=$out/summary.md

# Budgets: (full) the issue's tables; (quick) ~8 min on an H200; (tiny) a CPU smoke run.
# vs_reference adds rdd compiled (--compile) where the budget is a real one: matching.compile_nets=auto
# compiles a CIFAR-sized run, so that side is the path a user gets by default.
case $budget in
    full)  timeout_s=${STEP_TIMEOUT:-900}; dc=(--iterations 3); dm=(--iterations 20)
           idm=(--iterations 11); mtt_steps=2,10,30,50,80; mtt=(--iterations 3)
           ev=(--repeats 3); sync=(--iterations 2); ref=(--repeats 3 --compile) ;;
    quick) timeout_s=${STEP_TIMEOUT:-240}; dc=(--iterations 2); dm=(--iterations 6)
           idm=(--iterations 4); mtt_steps=2,10,30; mtt=(--iterations 2)
           ev=(--epochs 300 --repeats 1); sync=(--iterations 2); ref=(--repeats 3 --compile) ;;
    tiny)  timeout_s=${STEP_TIMEOUT:-600}
           dc=(--iterations 1 --per-class 8 --ipc 1 --outer-loop 1 --inner-loop 1)
           dm=(--iterations 2 --per-class 8 --ipc 1); idm=(--iterations 2 --per-class 8 --ipc 1)
           mtt_steps=2; mtt=(--iterations 1 --ipc 1 --batch-syn 10)
           ev=(--epochs 1 --num-nets 2 --test-size 64 --val-size 32 --repeats 1)
           sync=(--iterations 2 --methods dc,dsa,dm,idm,mtt --risks none,cvar)
           ref=(--repeats 1 --inner-epochs 1 --syn-steps 2 --per-class 8) ;;
esac

{
    echo "# rdd benchmarks on $device ($budget budget), $(date -Is)"
    echo
    echo "Folder: $out. One file per benchmark; each table below is that file's output."
    echo
} >"$summary"
{
    echo "date: $(date -Is)"; echo "host: $(hostname)"; echo "commit: $(git rev-parse HEAD 2>/dev/null)"
    git status --short 2>/dev/null | head -20
    $PY -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"
    echo "load average: $(cat /proc/loadavg 2>/dev/null)"
} >"$out/env.txt" 2>&1

wanted() {  # wanted NAME: whether --only (if given) names this benchmark
    [ -z "$only" ] || [[ $only == *",$1,"* ]]
}

step() {  # step NAME COMMAND...: run it, keep its output, add it to the summary
    local name=$1; shift
    wanted "$name" || return 0
    local start=$SECONDS
    echo "== $name: $*"
    timeout "$timeout_s" "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    local seconds=$((SECONDS - start))
    {
        echo "## $name"
        echo
        echo "    $*"
        echo
        echo "exit status $rc, $seconds s$([ $rc = 124 ] && echo " (timed out after $timeout_s s)")"
        echo
        grep -v -e '^\s*$' -e 'Warning' -e 'warnings.warn' -e '%|' "$out/$name.txt" | tail -40
        echo
    } >>"$summary"
    echo "   exit $rc, $seconds s"
}

B=benchmarks
step sync_points $PY $B/sync_points.py --device "$device" "${sync[@]}" --out "$out/sync_points.json"
step dc_iteration $PY $B/bench_dc_iteration.py --device "$device" "${dc[@]}"
step dsa_iteration $PY $B/bench_dc_iteration.py --device "$device" --dsa "${dc[@]}"
step dm_iteration $PY $B/bench_distribution_iteration.py --device "$device" --method dm "${dm[@]}"
step idm_iteration $PY $B/bench_distribution_iteration.py --device "$device" --method idm "${idm[@]}"
step mtt_syn_steps $PY $B/bench_mtt_syn_steps.py --device "$device" --syn-steps "$mtt_steps" \
    --memory full,constant "${mtt[@]}"
step eval_speed $PY $B/bench_eval_speed.py --device "$device" "${ev[@]}"

refs=()
[ -n "$vico_dir" ] && refs+=(--vico "$vico_dir")
[ -n "$idm_dir" ] && refs+=(--idm "$idm_dir")
[ -n "$mtt_dir" ] && refs+=(--mtt "$mtt_dir")
if ! wanted vs_reference; then
    :
elif [ ! -f $B/bench_vs_reference.py ]; then
    line="reference vs rdd: skipped, benchmarks/bench_vs_reference.py is not in this checkout"
    echo "$line"; printf '## vs_reference\n\n%s\n' "$line" >>"$summary"
elif [ ${#refs[@]} -eq 0 ]; then
    line="reference vs rdd: skipped, no reference checkout given (--vico/--idm/--mtt)"
    echo "$line"; printf '## vs_reference\n\n%s\n' "$line" >>"$summary"
else
    dev=()  # the script takes --device only if it has one
    $PY $B/bench_vs_reference.py --help 2>/dev/null | grep -q -- --device && dev=(--device "$device")
    items=()  # only the items whose reference was given
    [ -n "$vico_dir" ] && items+=(dc_match dsa_match dc_inner dsa_inner dm)
    [ -n "$idm_dir" ] && items+=(idm)
    [ -n "$mtt_dir" ] && items+=(mtt)
    step vs_reference $PY $B/bench_vs_reference.py "${refs[@]}" "${dev[@]}" "${ref[@]}" \
        --items "$(IFS=,; echo "${items[*]}")"
fi
echo "results: $out (summary.md)"
