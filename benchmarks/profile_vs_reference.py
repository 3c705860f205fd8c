"""Where the time of one work item goes, rdd against the reference: per-op self CPU time.

The same work items as bench_vs_reference.py (reference_work.py), both sides in one process on
the same inputs: one untimed warm-up each, ``--reps`` timed runs each, then ``--reps`` runs of
each side under ``torch.profiler``, printed as tables sorted by self CPU time (issue 28's
"Where the eager time went" in benchmarks/README.md came from these tables).

    cd benchmarks && python profile_vs_reference.py --item dm --vico <VICO checkout>
    cd benchmarks && python profile_vs_reference.py --item dc_inner --vico <checkout> --inner-epochs 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import reference_work as work
import torch
from torch.profiler import ProfilerActivity, profile

ITEMS = ("dc_match", "dc_inner", "dsa_match", "dsa_inner", "dm", "idm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item", choices=ITEMS, default="dm")
    parser.add_argument("--vico", type=Path, help="checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("--idm", type=Path, help="folder with uitrbn/IDM's .py files")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--per-class", type=int, default=256)
    parser.add_argument("--inner-epochs", type=int, default=50)
    args = parser.parse_args()
    args.compile = False  # the eager paths: what a profile can attribute op by op
    args.device = torch.device("cpu")  # the profile records CPU activity only
    needed = "idm" if args.item == "idm" else "vico"
    if getattr(args, needed) is None:
        parser.error(f"--{needed} is needed for {args.item}")
    sides = work.build([args.item], args)[args.item]
    for run in sides.values():
        run()  # warm-up
    for name, run in sides.items():
        print(name, "seconds", [round(run(), 3) for _ in range(args.reps)])
    for name, run in sides.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.reps):
                run()
        print(f"===== {name}")
        table = prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60
        )
        print(table)


if __name__ == "__main__":
    main()
