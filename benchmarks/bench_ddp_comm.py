"""Communication of DDP distillation per iteration: bytes all-reduced/broadcast and the number
of collective calls, batch-sharded (``trainer=ddp``) against class-parallel
(``trainer.class_parallel=true``), on 2 gloo CPU ranks (issue 18.6).

    .venv/bin/python benchmarks/bench_ddp_comm.py                       # the table in benchmarks/README.md
    .venv/bin/python benchmarks/bench_ddp_comm.py --shapes cifar10 --ipc 1 --methods dm   # one row

Each configuration runs ``rdd.run``'s distillation (``prepare`` + ``distill``, no evaluation)
in a fresh process that spawns 2 ranks, on random uint8 images of the problem's shape (the
source loader is replaced; communication does not depend on pixel values). Every
``torch.distributed`` collective is wrapped in each rank (spawned ranks re-import this script,
so the wrapping applies there) and counted per iteration with its tensor bytes and the rdd
function that called it. Iteration 0 is left out (it holds start-up collectives).

What is measured per iteration, and why the budget is cut (this is a 2-core CPU):
- DC/DSA: ``outer_loop=1 inner_loop=1``: one outer step (one image step). Communication per
  outer step does not depend on the loops (the inner loop trains on the replicated synthetic
  set, with no collective); multiply by ``outer_loop`` for a published iteration.
- ``batch_real`` is cut (16) for the row count; bytes do not depend on it (the reduced
  tensors are per-class sums, embeddings and gradients: ``--check-batch`` measures one row
  at two batch sizes to show it).
- The ImageNet-1K-shaped rows (1000 classes, 3x64x64, ConvNet-4) are measured on 20 and 40
  of the classes and extrapolated linearly to 1000 (``--imagenet-classes``; the table marks
  them). The two measured class counts show whether bytes and calls are linear in classes.

Compute per class (what the scaling model divides by the ranks) is ``--compute``: seconds of
one DC outer step / one DM iteration per class in ONE process at the published batch (256 real
images per class), CIFAR-10 shape, ConvNet-3 w128, IPC 10.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # name: (classes, channels, size, net overrides)
    "cifar10": (10, 3, 32, ["net=convnet"]),
    "cifar100": (100, 3, 32, ["net=convnet"]),
    "imagenet": (1000, 3, 64, ["net=convnet", "net.depth=4"]),
}
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "reduce_scatter", "all_to_all")
OBJECT_COLLECTIVES = ("broadcast_object_list", "all_gather_object", "barrier")
COUNTS_ENV = "RDD_BENCH_COUNTS"  # where each rank writes its counts


# -- counting, in every rank ------------------------------------------------------------------
class Counter:
    iteration = -1
    calls: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))  # it -> site -> [calls, bytes]


def call_site() -> str:
    """The first rdd function (outside rdd.parallel.distributed) or Lightning module up the stack."""
    for frame in inspect.stack()[2:]:
        path = frame.filename
        if "/rdd/" in path and not path.endswith("distributed.py"):
            return f"{Path(path).stem}.{frame.function}"
        if "/lightning/" in path:
            return "lightning"
    return "other"


def counted(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        entry = Counter.calls[Counter.iteration][f"{name}@{call_site()}"]
        entry[0] += 1
        entry[1] += tensor.numel() * tensor.element_size() if tensor is not None else 0
        return fn(*args, **kwargs)

    wrapper.rdd_counted = True  # torch's own decorators already set __wrapped__
    return wrapper


def install_counters() -> None:
    for name in COLLECTIVES + OBJECT_COLLECTIVES:
        if hasattr(dist, name) and not hasattr(getattr(dist, name), "rdd_counted"):
            setattr(dist, name, counted(name, getattr(dist, name)))


if os.environ.get(COUNTS_ENV):  # a spawned rank re-importing this script
    install_counters()


class IterationMarker(L.Callback):
    """Tags the collectives with the iteration and writes this rank's counts (and the seconds
    of every iteration) after each iteration."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        Counter.iteration = batch_idx
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seconds[batch_idx] = time.perf_counter() - self.start
        Counter.iteration = -1
        rank = dist.get_rank() if dist.is_initialized() else 0
        calls = {it: dict(sites) for it, sites in Counter.calls.items()}
        path = Path(os.environ[COUNTS_ENV]) / f"rank{rank}.json"
        path.write_text(json.dumps({"calls": calls, "seconds": self.seconds}))


# -- one configuration, in its own process ----------------------------------------------------
def random_source(classes: int, channels: int, size: int, per_class: int):
    from rdd.data.sources import ImageData

    def load_source(*args, **kwargs) -> ImageData:
        gen = torch.Generator().manual_seed(0)
        y = torch.arange(classes).repeat_interleave(per_class)
        x = torch.randint(0, 256, (len(y), channels, size, size), dtype=torch.uint8, generator=gen)
        return ImageData(
            x, y, x[:classes], torch.arange(classes), [f"c{i}" for i in range(classes)]
        )

    return load_source


def run_one(spec: dict) -> None:
    from hydra import compose, initialize_config_dir

    import rdd.data.sources as sources
    from rdd.config.compose import CONF_DIR
    from rdd.config.schemas import register_schemas
    from rdd.run import distill, prepare

    classes, channels, size, net = SHAPES[spec["shape"]]
    classes = spec.get("classes") or classes
    batch = spec["batch_real"]
    sources.load_source = random_source(classes, channels, size, max(batch, spec["ipc"]) + 1)
    overrides = [
        "data=cifar10",
        "data.val_fraction=0",
        f"ipc={spec['ipc']}",
        f"matching={spec['method']}",
        f"matching.iterations={spec['iterations']}",
        f"matching.batch_real={batch}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
        f"risk={spec['risk']}",
        *net,
    ]
    if spec["method"] in ("dc", "dsa"):
        overrides += ["matching.outer_loop=1", "matching.inner_loop=1"]
    if spec["mode"] == "class_parallel":
        overrides.append("trainer.class_parallel=true")
    overrides += ["+callbacks.comm._target_=__main__.IterationMarker"]
    overrides += [f"paths.output_dir={Path(os.environ[COUNTS_ENV]) / 'run'}"]
    register_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    distill(prepare(cfg))


def measure(spec: dict) -> dict:
    """Run one configuration in a fresh process; its counts per iteration (rank 0)."""
    with tempfile.TemporaryDirectory() as folder:
        env = os.environ | {COUNTS_ENV: folder, "RDD_CACHE_DIR": folder, "PYTHONWARNINGS": "ignore"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]
        )
        done = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(spec)],
            env=env, capture_output=True, text=True, cwd=folder,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{spec}: failed\n{done.stderr[-3000:]}")
        ranks = [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in (0, 1)]
    return summarise(ranks)


def summarise(ranks: list[dict]) -> dict:
    """Per iteration (median over iterations >= 1) of rank 0: calls, bytes, by call site."""
    calls = ranks[0]["calls"]
    iterations = sorted(int(it) for it in calls if int(it) >= 1)
    per_it = [calls[str(it)] for it in iterations]
    totals = [(sum(v[0] for v in s.values()), sum(v[1] for v in s.values())) for s in per_it]
    totals.sort()
    sites = defaultdict(lambda: [0, 0])
    for site, (n, b) in per_it[-1].items():
        sites[site] = [n, b]
    seconds = sorted(ranks[0]["seconds"][str(it)] for it in iterations)
    same = all(
        r["calls"].get(str(it)) == ranks[0]["calls"].get(str(it))
        for r in ranks
        for it in iterations
    )
    return {
        "calls": totals[len(totals) // 2][0],
        "bytes": totals[len(totals) // 2][1],
        "sites": dict(sites),
        "seconds": seconds[len(seconds) // 2],
        "ranks_agree": same,
    }


# -- compute per class, one process -----------------------------------------------------------
def compute_per_class(repeats: int) -> dict:
    """Seconds per class of a DC outer step and a DM iteration at the published batch."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import cifar_shaped, plain_learner, time_steps

    from rdd.matching.distribution import DistributionMatching
    from rdd.matching.gradient import GradientMatching

    real_x, real_y = cifar_shaped(per_class=256)
    out = {}
    for name, matcher in (
        ("dc", GradientMatching(iterations=repeats + 1, outer_loop=1, inner_loop=1)),
        ("dm", DistributionMatching(iterations=repeats + 1)),
    ):
        init = real_x[torch.arange(10) * 256].repeat_interleave(10, 0).clone()
        learner = plain_learner(matcher, init, real_x, real_y, ipc=10)
        times = sorted(time_steps(matcher, learner, repeats + 1)[1:])
        out[name] = times[len(times) // 2] / 10
    return out


# -- the table ----------------------------------------------------------------------------------
def rows(args) -> list[dict]:
    specs = []
    for shape in args.shapes:
        class_counts = args.imagenet_classes if shape == "imagenet" else [None]
        for classes in class_counts:
            for ipc in args.ipc:
                for method in args.methods:
                    for mode in args.modes:
                        specs.append(
                            {"shape": shape, "classes": classes, "ipc": ipc, "method": method,
                             "mode": mode, "risk": args.risk, "batch_real": args.batch_real,
                             "iterations": args.iterations}
                        )  # fmt: skip
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument(
        "--shapes", default="cifar10,cifar100,imagenet", type=lambda s: s.split(",")
    )
    parser.add_argument("--ipc", default="1,10,50", type=lambda s: [int(i) for i in s.split(",")])
    parser.add_argument("--methods", default="dc,dm", type=lambda s: s.split(","))
    parser.add_argument("--modes", default="sharded,class_parallel", type=lambda s: s.split(","))
    parser.add_argument(
        "--imagenet-classes", default="20,40", type=lambda s: [int(i) for i in s.split(",")]
    )
    parser.add_argument("--risk", default="none")
    parser.add_argument("--batch-real", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--check-batch", action="store_true", help="one row at batch 16 and 64")
    parser.add_argument("--compute", type=int, default=0, help="repeats of the compute timing")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    if args.one:
        run_one(json.loads(args.one))
        return
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; load {os.getloadavg()}"
    )
    results = []
    specs = rows(args)
    if args.check_batch:
        base = {"shape": "cifar10", "classes": None, "ipc": 10, "method": "dc", "mode": "sharded",
                "risk": args.risk, "iterations": args.iterations}  # fmt: skip
        specs = [base | {"batch_real": b} for b in (16, 64)]
    print(
        "| problem | ipc | method | mode | collectives / it | MB / it | s / it (2 ranks) | ranks agree |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in specs:
        got = measure(spec)
        results.append(spec | got)
        if args.out:  # after every row: a long table cut short keeps what it measured
            args.out.write_text(json.dumps(results, indent=1))
        problem = spec["shape"] + (f" ({spec['classes']} classes)" if spec["classes"] else "")
        if args.check_batch:
            problem += f", batch {spec['batch_real']}"
        print(
            f"| {problem} | {spec['ipc']} | {spec['method']} | {spec['mode']} | {got['calls']} | "
            f"{got['bytes'] / 1e6:.3f} | {got['seconds']:.2f} | {got['ranks_agree']} |",
            flush=True,
        )
    for result in results:
        print(f"# sites {result['shape']}/{result['classes']}/{result['ipc']}/{result['method']}/"
              f"{result['mode']}: {json.dumps(result['sites'])}")  # fmt: skip
    if args.compute:
        print(f"# compute per class, one process (s): {compute_per_class(args.compute)}")
    print(f"# load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
