#!/usr/bin/env bash
# Wall-clock time of the README's set-up and quickstart commands, as a new user meets them:
# first with a fresh dataset cache (CIFAR-10's JPEGs decoded once), then again with it warm.
# Usage: benchmarks/quickstart_times.sh [CIFAR-10 JPEG root] (default ../shared/data/cifar10-jpeg)
# Run on an idle machine (nothing else running); prints one line per command and the load.
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=${1:-../shared/data/cifar10-jpeg}
PY=.venv/bin/python
SCRATCH=$(mktemp -d)
export RDD_CACHE_DIR="$SCRATCH/cache" RDD_LOG_DIR="$SCRATCH/logs" PYTHONWARNINGS=ignore

time_it() {  # time_it <label> <args...>: one line "<label>: <seconds> s (exit <status>)"
    local label=$1
    shift
    local start end status=0
    start=$(date +%s.%N)
    "$PY" -m rdd.run "$@" print_config=false >"$SCRATCH/out.log" 2>&1 || status=$?
    end=$(date +%s.%N)
    printf '%-40s %7.1f s (exit %d)\n' "$label" "$(echo "$end - $start" | bc)" "$status"
}

echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for cache in cold warm; do
    time_it "make run ($cache cache)"
    time_it "cifar10 short budget ($cache cache)" data=cifar10 data.root="$CIFAR" matching=dsa \
        ipc=1 matching.iterations=2 eval.epochs=20 eval.num_nets=1
    time_it "cifar10_cpu_smoke ($cache cache)" experiment=cifar10_cpu_smoke \
        data.root="$CIFAR" matching=dsa ipc=1
    time_it "debug=default ($cache cache)" debug=default
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$SCRATCH"
