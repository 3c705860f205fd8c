"""Why tests/parallel/test_ddp.py's IDM case needs a looser tolerance than DC's.

The test compares a 2-rank DDP run of IDM (CVaR over 2 k-means subgroups, owned images) with
one process. Under pytest both runs inherit ``DNNL_MAX_CPU_ISA=AVX2`` (tests/conftest.py pins
oneDNN's AVX2 kernels for the parity fixtures). This script runs the test's config four ways
(one process or two ranks, oneDNN's default kernels or AVX2) and once more as two ranks with
a *dropped reduction* (every rank keeps its own shard's sums in the robust matcher's coalesced
all-reduce, through a generated ``sitecustomize``), and prints the largest image difference
of every pair: the tolerance must sit above the rounding and below the dropped reduction.

    PYTHONPATH=src python benchmarks/ddp_isa.py --out /tmp/ddp_isa
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_rounding import DDP, largest_difference  # noqa: E402

# tests/parallel/test_ddp.py: robust_runs("idm", ...)
CONFIG = ["risk=cvar", "clustering.k=2", "robust.allocation.shared=false"]
CONFIG += ["robust.allocation.min_images=1", "ipc=2", "eval.epochs=2", "eval.num_nets=1"]
CONFIG += ["logger=csv", "trainer.enable_progress_bar=false", "matching=idm"]
CONFIG += ["matching.iterations=3", "matching.generate_every=1", "matching.batch_train=64"]
CONFIG += ["matching.train_steps=2"]

# Imported first by every process of a run (both ranks) whose PYTHONPATH starts with its folder.
DROP_REDUCTION = """import rdd.parallel.distributed as distributed
distributed.all_reduce_sum_coalesced = lambda tensors: [t.clone() for t in tensors]
"""

RUNS = {  # name: (DDP?, oneDNN ISA or None for the default, reduction dropped?)
    "one process, default kernels": (False, None, False),
    "one process, AVX2": (False, "AVX2", False),
    "2 ranks, default kernels": (True, None, False),
    "2 ranks, AVX2": (True, "AVX2", False),
    "2 ranks, reduction dropped": (True, None, True),
}


def run(out: Path, name: str, ddp: bool, isa: str | None, drop: bool) -> Path:
    """One rdd.run in a subprocess (skipped when its synset exists); its output folder."""
    folder = out / name.replace(" ", "_").replace(",", "")
    if (folder / "synset.pt").exists():
        return folder
    env = {k: v for k, v in os.environ.items() if k != "DNNL_MAX_CPU_ISA"}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if isa is not None:
        env["DNNL_MAX_CPU_ISA"] = isa
    if drop:
        patch = out / "drop_reduction"
        patch.mkdir(parents=True, exist_ok=True)
        (patch / "sitecustomize.py").write_text(DROP_REDUCTION)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(patch), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "rdd.run", *(DDP if ddp else []), *CONFIG]
    subprocess.run(
        [*command, f"hydra.run.dir={folder}"],
        check=True,
        env=env,
        cwd=out,
        capture_output=True,
        text=True,
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs (reused)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folders = {name: run(args.out.resolve(), name, *how) for name, how in RUNS.items()}
    print("| run | run | largest image difference |")
    print("| --- | --- | --- |")
    for a, b in itertools.combinations(RUNS, 2):
        print(f"| {a} | {b} | {largest_difference(folders[a], folders[b]):.1e} |")


if __name__ == "__main__":
    main()
