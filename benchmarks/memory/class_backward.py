"""Peak memory of one DC / DM distillation iteration, before and after the backward per class.

DC, DSA and DM's loss is a sum over classes. Before, the learner took one backward of that sum,
so every class's graph stayed in memory until the image step; now each class's loss is
backpropagated as soon as it is made (``rdd.matching.base.backward_each``). This runs one
iteration of each setting through the learner and a Lightning Trainer (the run's own image
step) in a fresh process per measurement, once with the sources before the change and once
with these, and records each process's peak resident set size (``ru_maxrss``: torch's CPU
allocations are invisible to tracemalloc) and a hash of the images the iteration left, so the
two trees' results can be compared bitwise.

    OMP_NUM_THREADS=1 python benchmarks/memory/class_backward.py --before <checkout before>/src

Setting: CIFAR-100-shaped random data (3x32x32), ConvNet-3 width 128 (instance norm), 32 real
images per class per step; DC with one outer loop (its matching step; the published loops
train the network in between, which holds no class graph); DM with DSA. See README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (method, classes, ipc, trees). Before the change the peak grows by one class graph per
# class: ~20 / ~100 MiB (DM, IPC 10 / 50) and ~30 / ~180 MiB (DC). At IPC 50 on 100 classes
# that is ~11 GiB (DM) and ~18.5 GiB (DC), more than a shared 24 GiB machine can spare: there
# the before side runs on 10 and 20 classes (the growth per class, to extrapolate) and the
# after side on 100 (DM; DC's 100-class IPC 50 iteration alone would take minutes).
GRID = [
    ("dm", 100, 10, ("before", "after")),
    ("dm", 10, 50, ("before", "after")),
    ("dm", 20, 50, ("before", "after")),
    ("dm", 100, 50, ("after",)),
    ("dc", 100, 10, ("before", "after")),
    ("dc", 10, 50, ("before", "after")),
    ("dc", 20, 50, ("before", "after")),
]
BATCH_REAL, SHAPE = 32, (3, 32, 32)


def one_iteration(method: str, classes: int, ipc: int) -> dict:
    """Run one iteration in this process; its peak RSS, the images' hash and the loss."""
    import lightning as L
    import torch

    from rdd.distill.learner import SyntheticSetLearner
    from rdd.matching.distribution import DistributionMatching
    from rdd.matching.gradient import GradientMatching
    from rdd.nets import build_net

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    real_x = torch.randn(classes * BATCH_REAL, *SHAPE, generator=gen)
    real_y = torch.arange(classes).repeat_interleave(BATCH_REAL)
    init = torch.randn(classes * ipc, *SHAPE, generator=gen)
    if method == "dc":
        matcher = GradientMatching(iterations=1, batch_real=BATCH_REAL, outer_loop=1)
    else:
        matcher = DistributionMatching(iterations=1, batch_real=BATCH_REAL)
    make_net = partial(build_net, "convnet", SHAPE[0], classes, SHAPE[1:])
    learner = SyntheticSetLearner(matcher, make_net, init, real_x, real_y, classes, ipc, seed=0)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    setup = peak_rss_mib()
    start = time.perf_counter()
    trainer.fit(learner)
    images = learner.images.detach().contiguous().numpy().tobytes()
    return {
        "peak_rss_mib": round(peak_rss_mib()),
        "setup_peak_rss_mib": round(setup),
        "seconds": round(time.perf_counter() - start, 1),
        "images_sha256": hashlib.sha256(images).hexdigest(),
        "match_loss": float(trainer.callback_metrics["train/match_loss"]),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(src: Path, method: str, classes: int, ipc: int) -> dict:
    """One iteration in a fresh process that imports rdd from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", method, str(classes), str(ipc)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} {classes} classes ipc {ipc}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def commit_of(src: Path) -> str:
    """The checkout's commit, with '+changes' when its sources differ from it."""
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "."], capture_output=True, text=True)
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> dict:
    """CPU model, cores and RAM (from /proc: Linux)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if "model name" in ln), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = int(next(ln for ln in meminfo if ln.startswith("MemTotal")).split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1)}


def load() -> str:
    """The 1, 5 and 15 minute load averages (what `uptime` prints)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src/ of the tree before")
    parser.add_argument("--after", type=Path, default=HERE.parents[1] / "src")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    import torch

    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    report = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/memory/class_backward.py --before <src>",
        "trees": {name: commit_of(src) for name, src in trees.items()},
        "machine": machine() | {"torch": torch.__version__, "python": sys.version.split()[0]},
        "load_before": load(),
        "batch_real": BATCH_REAL,
        "rows": [],
    }
    for method, classes, ipc, sides in GRID:
        row = {"method": method, "classes": classes, "ipc": ipc}
        for name in sides:
            row[name] = measure(trees[name], method, classes, ipc)
            print(method, classes, ipc, name, row[name], flush=True)
        if len(sides) == 2:
            hashes = {row[name]["images_sha256"] for name in sides}
            row["images_bitwise_equal"] = len(hashes) == 1
        report["rows"].append(row)
    report["load_after"] = load()
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        method, classes, ipc = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(one_iteration(method, classes, ipc)))
    else:
        main()
