"""How well does the linear probe of ``clustering.features=style_error`` rank a rare subgroup?

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/error_probe.py \\
        <cifar10 root> > benchmarks/subgroup_shift/error_probe.txt

The probe (``rdd.clustering.features.fit_linear_probe``: an L2 logistic regression of the
class on PROBE_SIZE x PROBE_SIZE thumbnails) is fitted on the pool a run clusters (256 per
class, drawn as ``KMeansClusterer(seed=0).pool``) and scored on that pool, as the clusterer
uses it, and, for comparison, fitted on every training image and scored on all of them, with
4x4 (the default) and 8x8 thumbnails. Per transform (CIFAR-10, 5 % of every class altered):
the AUC of the loss of each image's own class against the altered mask, and the purity and
recall of a class's top 5 % and 10 % by that loss (``anomaly_scores.tail_row``, means over
classes). The accuracy is the probe's on the images it is scored on.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import rdd.clustering.features as features
from rdd.clustering import KMeansClusterer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_scores import tail_row  # noqa: E402
from shape import load  # noqa: E402

SIZES = (4, 8)


def probe_row(images, labels, altered, classes: int, name: str) -> str:
    probe = features.fit_linear_probe(images, labels, classes)
    loss = features.probe_loss(images, labels, probe)
    inputs = features.standard_probe_inputs(images, probe)
    predicted = (inputs @ probe["probe_weight"] + probe["probe_bias"]).argmax(1)
    accuracy = float((predicted == labels).float().mean())
    return tail_row(f"{name} (accuracy {accuracy:.2f})", loss, labels, altered, classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the data root (CIFAR-10's JPEG folders)")
    parser.add_argument("--transforms", nargs="+", default=["invert", "grayscale", "blur"])
    args = parser.parse_args()
    start = time.process_time()
    print(f"# error_probe.py <cifar10 root>; {platform.machine()}, torch {torch.__version__}")
    default_size = features.PROBE_SIZE
    for transform in args.transforms:
        data = load(args.root, transform)
        x, y, altered, classes = data.train_x, data.train_y, data.train_subgroup, data.num_classes
        pool = KMeansClusterer(seed=0).pool(y, classes)
        print(f"\n## {transform}\n\n| probe | AUC | top 5%: purity / recall | top 10% |")
        print("|---|---|---|---|")
        for size in SIZES:
            features.PROBE_SIZE = size  # probe_inputs reads it at every call
            print(probe_row(x[pool], y[pool], altered[pool], classes, f"{size}x{size}, the pool"))
            print(probe_row(x, y, altered, classes, f"{size}x{size}, every image"), flush=True)
        features.PROBE_SIZE = default_size
    print(f"\n({time.process_time() - start:.0f} CPU s)")


if __name__ == "__main__":
    main()
