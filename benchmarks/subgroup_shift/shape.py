"""What ``clustering.shape=auto`` decides per transform and seed, and on the data it measures.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/shape.py \\
        <cifar10 root> [--seeds 0 1 2 3] > benchmarks/subgroup_shift/shape.txt

For CIFAR-10 with 5 % of every class altered (grayscale, invert, blur) and without a rare
subgroup (clean), the default clusterer (``KMeansClusterer()``: style space, k = 5, a pool
of 256 per class drawn with the run's seed, as a run fits it at iteration 0) is fitted per
seed. Printed: the mean over classes of the smallest cluster's silhouette (the statistic
``auto`` thresholds at ``clustering.apart``, 0.3), its range over the classes, the decision,
and the rare group's purity and recall under the groups ``auto`` makes (the group holding
most of a class's altered images; ``rdd.clustering.rare_group_discovery``) over all
training images, as a run logs them.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from rdd.clustering import KMeansClusterer, rare_group_discovery
from rdd.clustering.separation import class_silhouettes
from rdd.config.compose import build

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import compose_config  # noqa: E402

TRANSFORMS = ("grayscale", "invert", "blur", "clean")


def load(root: str, transform: str):
    """The CIFAR-10 data module, with ``data.subgroup=transform`` unless ``clean``."""
    overrides = ["data=cifar10", f"data.root={root}"]
    if transform != "clean":
        overrides.append(f"data.subgroup={transform}")
    cfg = compose_config(*overrides, output_dir=Path("/tmp/rdd-shape"))
    data = build(cfg.data, "data")
    data.setup()
    return data


def row(data, transform: str, seed: int) -> str:
    clusterer = KMeansClusterer(seed=seed)
    pool = clusterer.pool(data.train_y, data.num_classes)
    images, labels = data.train_x[pool], data.train_y[pool]
    clusterer.fit(images, labels, data.num_classes)
    stats = clusterer.fit_stats()
    features = clusterer.features_of(images)
    # The fit's clusters, unmerged: what auto's mean is taken over.
    scores = class_silhouettes(features, labels, clusterer.assignments, clusterer.k)
    line = (
        f"{transform:9s} {seed:4d} {stats['cluster/silhouette']:10.3f} "
        f"{min(scores):6.3f}-{max(scores):5.3f} "
        f"{'rare_vs_rest' if stats['cluster/merged'] else 'clusters':>12s}"
    )
    if data.train_subgroup is None:
        return line
    per_class = clusterer.num_groups(data.num_classes) // data.num_classes
    everyone = clusterer.assign(data.train_x, data.train_y)  # as a run groups every image
    found = rare_group_discovery(
        everyone, data.train_y, data.train_subgroup, per_class, data.num_classes
    )
    return line + (
        f" {100 * found['cluster/rare_purity']:8.1f} {100 * found['cluster/rare_recall']:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="CIFAR-10 root (the JPEG folders)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    start = time.process_time()
    machine = platform.processor() or platform.machine()
    print(f"# CIFAR-10, seeds {args.seeds}; {machine}, torch {torch.__version__}")
    print("transform seed silhouette  class range     decision  purity%  recall%")
    for transform in TRANSFORMS:
        data = load(args.root, transform)
        for seed in args.seeds:
            print(row(data, transform, seed), flush=True)
    print(f"# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
