"""What ``clustering.shape=auto`` decides per transform and seed, and on the data it measures.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/shape.py \\
        <cifar10 root> [--seeds 0 1 2 3] > benchmarks/subgroup_shift/shape.txt
    # the threshold off the data it was chosen on (shape_other.txt and shape_heldout.txt, each
    # the two commands' output in turn: benchmarks/subgroup_shift/README.md, section 14)
    ... shape.py <cifar10 root> --fractions 0.02 0.1 0.2
    ... shape.py --data digits --fractions 0.05 0.1 --seeds $(seq 0 19)
    ... shape.py <cifar10 root> --fractions 0.03 0.07 --subgroup-seed 1 --seeds 4 5 6 7
    ... shape.py --data digits --fractions 0.03 0.07 --subgroup-seed 1 --seeds $(seq 20 39)
    # the runs' default space since section 16 (shape_floor*.txt): each command above with
    ... --features style_error    # and --loss-floor 0 for section 15's unfloored space

For CIFAR-10 with 5 % of every class altered (grayscale, invert, blur) and without a rare
subgroup (clean), the clusterer (``KMeansClusterer``: k = 5, a pool of 256 per class drawn
with the run's seed, as a run fits it at iteration 0) is fitted per seed in the space
``--features`` names: ``style`` by default, the space sections 13-14 measured; runs default
to ``style_error`` since section 16. Printed: the mean over classes of the smallest
cluster's silhouette, the mean of its excess over its class's mean silhouette (the statistic
``auto`` thresholds at ``clustering.apart``, 0.07) and that excess's range over the classes,
the decision, and the rare group's purity and recall under the groups ``auto`` makes (the
group holding most of a class's altered images; ``rdd.clustering.rare_group_discovery``) over
all training images, as a run logs them. ``--fractions`` alters other shares of every class and
``--data digits`` uses scikit-learn's digits (one channel: invert and blur only), to check
the threshold away from the data it was chosen on.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from rdd.clustering import KMeansClusterer, rare_group_discovery
from rdd.clustering.separation import class_separations, smallest_cluster_silhouette
from rdd.config.compose import build

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import compose_config  # noqa: E402

TRANSFORMS = ("grayscale", "invert", "blur", "clean")
ONE_CHANNEL = ("invert", "blur", "clean")  # grayscale needs colour


def load(
    root: str | None,
    transform: str,
    dataset: str = "cifar10",
    fraction: float = 0.05,
    subgroup_seed: int = 0,
):
    """The data module, with ``fraction`` of every class altered by ``transform`` (its
    images drawn with ``subgroup_seed``) unless ``clean``."""
    overrides = [f"data={dataset}"] + ([f"data.root={root}"] if root else [])
    if transform != "clean":
        overrides.append(
            f"data.subgroup={{transform:{transform},fraction:{fraction},seed:{subgroup_seed}}}"
        )
    cfg = compose_config(*overrides, output_dir=Path("/tmp/rdd-shape"))
    data = build(cfg.data, "data")
    data.setup()
    return data


def row(
    data, transform: str, seed: int, features: str = "style", loss_floor: float | None = None
) -> str:
    floor = {} if loss_floor is None else {"loss_floor": loss_floor}  # None: the default
    clusterer = KMeansClusterer(seed=seed, features=features, **floor)
    pool = clusterer.pool(data.train_y, data.num_classes)
    images, labels = data.train_x[pool], data.train_y[pool]
    clusterer.fit(images, labels, data.num_classes)
    stats = clusterer.fit_stats()
    features = clusterer.features_of(images, labels=labels)
    # The fit's clusters, unmerged: what auto's mean is taken over.
    clusters = clusterer.assignments
    silhouettes = class_separations(
        features, labels, clusters, clusterer.k, of=smallest_cluster_silhouette
    )
    excesses = class_separations(features, labels, clusters, clusterer.k)
    line = (
        f"{transform:9s} {seed:4d} {sum(silhouettes) / len(silhouettes):10.3f} "
        f"{stats['cluster/separation']:6.3f} {min(excesses):6.3f}..{max(excesses):5.3f} "
        f"{'rare_vs_rest' if stats['cluster/merged'] else 'clusters':>12s}"
    )
    if data.train_subgroup is None:
        return line
    found = rare_group_found(clusterer, data)
    return line + (
        f" {100 * found['cluster/rare_purity']:8.1f} {100 * found['cluster/rare_recall']:7.1f}"
    )


def rare_group_found(clusterer: KMeansClusterer, data) -> dict[str, float]:
    """The rare group's purity and recall under a fitted ``clusterer``, over every training
    image as a run groups them (``rdd.clustering.rare_group_discovery``)."""
    per_class = clusterer.num_groups(data.num_classes) // data.num_classes
    everyone = clusterer.assign(data.train_x, data.train_y)
    return rare_group_discovery(
        everyone, data.train_y, data.train_subgroup, per_class, data.num_classes
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", help="the data root (CIFAR-10's JPEG folders)")
    parser.add_argument("--data", default="cifar10", help="cifar10 (default) or digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05])
    parser.add_argument("--subgroup-seed", type=int, default=0, help="which images are altered")
    parser.add_argument("--features", default="style", help="clustering.features (style_error)")
    parser.add_argument(
        "--loss-floor",
        type=float,
        help="clustering.loss_floor (style_error); default: the clusterer's",
    )
    args = parser.parse_args()
    if args.data != "digits" and not args.root:
        parser.error(f"--data {args.data} needs its root, e.g. ../shared/data/cifar10-jpeg")
    start = time.process_time()
    machine = platform.processor() or platform.machine()
    print(
        f"# {args.data}, seeds {args.seeds}, altered images drawn with seed "
        f"{args.subgroup_seed}, features {args.features}"
        + ("" if args.loss_floor is None else f", loss floor {args.loss_floor:g}")
        + f"; {machine}, torch {torch.__version__}"
    )
    transforms = ONE_CHANNEL if args.data == "digits" else TRANSFORMS
    for fraction in args.fractions:
        print(f"## {100 * fraction:g} % of every class altered")
        print("transform seed silhouette excess  class range      decision  purity%  recall%")
        for transform in transforms:
            if transform == "clean" and fraction != args.fractions[0]:
                continue  # the same data at every fraction
            data = load(args.root, transform, args.data, fraction, args.subgroup_seed)
            for seed in args.seeds:
                print(row(data, transform, seed, args.features, args.loss_floor), flush=True)
    print(f"# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
