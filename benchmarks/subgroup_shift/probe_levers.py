"""Two levers on ``clustering.features=style_error`` for finding inverted images, measured.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/probe_levers.py \\
        <cifar10 root> > benchmarks/subgroup_shift/probe_levers.txt

The default clusters hold a class's inverted images at about a third purity, while the top 5 %
of a class by the probe's loss alone is about half inverted (``error_probe.txt``). Two ways to
carry more of the probe's signal into the groups, each on the run's pool (256 per class, the
clusterer's draw for the seed), CIFAR-10 with 5 % of every class altered:

1. *A trimmed probe* (invert only: the probe sees nothing of grey or blurred images): fit,
   drop each class's top ``q`` by loss (the likely misfits, inverted images among them), fit
   again on the rest, ``rounds`` times, and score the whole pool with the last fit. The AUC
   of the loss against the altered mask and the purity / recall of a class's top 5 % and 10 %
   (``anomaly_scores.tail_row``).
2. *The loss column's weight* in the k-means (its robust scale divided by ``w``; 1 is the
   default), on all three transforms: ``auto``'s decision and the rare group's purity and
   recall over every training image, as a run logs them (``shape.row``'s columns).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from rdd.clustering import KMeansClusterer
from rdd.clustering.features import fit_linear_probe, probe_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_scores import tail_row  # noqa: E402
from shape import load, rare_group_found  # noqa: E402

TRIMS = ((0.0, 0), (0.05, 1), (0.1, 1), (0.2, 1), (0.1, 3))  # (q, rounds); (0, 0): the default
WEIGHTS = (1.0, 1.5, 2.0, 3.0)


def trimmed_probe_loss(
    images: Tensor, labels: Tensor, classes: int, share: float, rounds: int
) -> Tensor:
    """The probe's loss on every image after ``rounds`` refits without each class's top
    ``share`` by the previous fit's loss; ``rounds=0`` is the default probe."""
    loss = probe_loss(images, labels, fit_linear_probe(images, labels, classes))
    for _ in range(rounds):
        keep = torch.ones(len(labels), dtype=torch.bool)
        for c in range(classes):
            members = (labels == c).nonzero().squeeze(1)
            keep[members[loss[members].topk(round(share * len(members))).indices]] = False
        loss = probe_loss(images, labels, fit_linear_probe(images[keep], labels[keep], classes))
    return loss


class WeightedLoss(KMeansClusterer):
    """``style_error`` clusters with the probe loss's column weighted by ``weight``."""

    def __init__(self, weight: float, **kwargs) -> None:
        super().__init__(features="style_error", **kwargs)
        self.weight = weight

    def _fit_style_space(self, images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        features = super()._fit_style_space(images, labels, num_classes)
        self.feature_scale[-1] /= self.weight  # for features_of and assign after the fit
        features[:, -1] *= self.weight
        return features


def weight_row(data, transform: str, seed: int, weight: float) -> str:
    clusterer = WeightedLoss(weight, seed=seed)
    pool = clusterer.pool(data.train_y, data.num_classes)
    clusterer.fit(data.train_x[pool], data.train_y[pool], data.num_classes)
    stats = clusterer.fit_stats()
    found = rare_group_found(clusterer, data)
    decision = "rare_vs_rest" if stats["cluster/merged"] else "clusters"
    return (
        f"| {transform} | {weight:g} | {seed} | {stats['cluster/separation']:.3f} | {decision} | "
        f"{100 * found['cluster/rare_purity']:.1f} / {100 * found['cluster/rare_recall']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the data root (CIFAR-10's JPEG folders)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    start = time.process_time()
    print(f"# probe_levers.py <cifar10 root>; {platform.machine()}, torch {torch.__version__}")
    data = load(args.root, "invert")
    print("\n## 1. a trimmed probe (invert)\n")
    print("| probe | AUC | top 5%: purity / recall | top 10% |\n|---|---|---|---|")
    for seed in args.seeds:
        pool = KMeansClusterer(seed=seed).pool(data.train_y, data.num_classes)
        x, y, altered = data.train_x[pool], data.train_y[pool], data.train_subgroup[pool]
        for share, rounds in TRIMS:
            loss = trimmed_probe_loss(x, y, data.num_classes, share, rounds)
            name = f"seed {seed}, " + (
                f"trim {share:g} x{rounds}" if rounds else "the default (no trim)"
            )
            print(tail_row(name, loss, y, altered, data.num_classes), flush=True)
    print("\n## 2. the loss column's weight\n")
    print("| transform | weight | seed | excess | auto decides | purity / recall % |")
    print("|---|---|---|---|---|---|")
    for transform in ("invert", "grayscale", "blur"):
        data = data if transform == "invert" else load(args.root, transform)
        for weight in WEIGHTS:
            for seed in args.seeds:
                print(weight_row(data, transform, seed, weight), flush=True)
    print(f"\n# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
