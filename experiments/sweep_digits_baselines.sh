#!/usr/bin/env bash
# Every method available now x 3 seeds on the embedded digits at IPC 10 (CPU, ~20 minutes).
# Extra Hydra overrides are passed through, e.g. `ipc=1` or `eval.num_nets=5`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m rdd.run -m matching=dc,dsa,random,herding,kcenter seed=0,1,2 "$@"
