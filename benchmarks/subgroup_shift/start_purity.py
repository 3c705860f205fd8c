"""How often a represented image starts from a real image of the rare subgroup, by
``robust.allocation.start_share``.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/start_purity.py \\
        <cifar10 root> > benchmarks/subgroup_shift/start_purity.txt

For CIFAR-10 with 5 % of every class altered (grayscale, invert, blur), the default clusterer
(``style_error``, ``shape=auto``, k = 5, the run's pool of 256 per class) is fitted per seed
as a run fits it, every training image is assigned with its margin
(``KMeansClusterer.assign_with_margins``), and each class's groups get the images of the
first, size-based allocation under ``risk=cvar`` (the images ``represent`` keeps as real
starts; ``rdd.robust.ownership.allocate_class``). Each group's starts are drawn with
``RealPool.draw_start`` at each share, 50 times (a draw per start image; IDM draws four, one
per tile, the same way); printed: the share of the draws that are altered images, over all
represented images of the seed, per start share. Section 17 of this folder's README.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rdd.clustering import KMeansClusterer
from rdd.distill.realpool import RealPool
from rdd.risk import CVaR
from rdd.robust.ownership import AllocationSettings, allocate_class

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape import load  # noqa: E402

SHARES = (1.0, 0.5, 0.25)
REPEATS = 50


def default_fit(data, seed: int, **overrides) -> KMeansClusterer:
    """A run's default clusterer (``style_error``; ``overrides`` change its keys), fitted as a
    run fits it: on its pool of 256 images per class."""
    clusterer = KMeansClusterer(seed=seed, features="style_error", **overrides)
    pool_idx = clusterer.pool(data.train_y, data.num_classes)
    clusterer.fit(data.train_x[pool_idx], data.train_y[pool_idx], data.num_classes)
    return clusterer


def default_pool(data, seed: int, rare_pick: str = "smallest") -> RealPool:
    """The training images grouped as a run's default clusterer groups them (fitted on its
    pool of 256 per class, every image assigned with its margin), with their altered flags."""
    clusterer = default_fit(data, seed, rare_pick=rare_pick)
    groups, margins = clusterer.assign_with_margins(data.train_x, data.train_y)
    pool = RealPool(data.train_y, data.num_classes, data.train_subgroup)
    pool.set_groups(groups, clusterer.num_groups(data.num_classes) // data.num_classes, margins)
    return pool


def root_and_seeds(description: str) -> argparse.Namespace:
    """The scripts' command line: the CIFAR-10 root and the clusterer's seeds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("root", help="the CIFAR-10 root (its JPEG folders)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    return parser.parse_args()


def start_purity(data, seed: int, shares=SHARES) -> tuple[int, list[float]]:
    """(represented images, the altered share of their start draws at each share)."""
    pool = default_pool(data, seed)
    risk, settings = CVaR(alpha=0.5), AllocationSettings()
    represented, altered = 0, [0.0] * len(shares)
    generator = torch.Generator().manual_seed(seed)
    for c in range(data.num_classes):
        class_groups = pool.class_groups(c)
        counts = allocate_class(risk, pool.group_sizes(c), 10, settings)[: len(class_groups)]
        for group, count in zip(class_groups.tolist(), counts.tolist(), strict=True):
            represented += count
            for i, share in enumerate(shares):
                for _ in range(REPEATS):
                    drawn = pool.draw_start(group, count, share, generator)
                    altered[i] += float(pool.altered[drawn].float().sum()) / REPEATS
    return represented, [a / max(represented, 1) for a in altered]


def main() -> None:
    args = root_and_seeds(__doc__.splitlines()[0])
    start = time.process_time()
    print(f"# torch {torch.__version__}; altered share of represented starts, by start_share")
    print("transform seed represented " + " ".join(f"share{s:<5g}" for s in SHARES))
    for transform in ("grayscale", "invert", "blur"):
        data = load(args.root, transform)
        for seed in args.seeds:
            represented, purity = start_purity(data, seed)
            cells = " ".join(f"{100 * p:9.1f}" for p in purity)
            print(f"{transform:9s} {seed:4d} {represented:11d} {cells}", flush=True)
    print(f"# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
