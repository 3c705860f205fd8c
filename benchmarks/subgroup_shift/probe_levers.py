"""Three levers on ``clustering.features=style_error`` for finding inverted images, measured.

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
3. *A misfit signature* (JTT's error set, generalised across classes): pseudo-label each
   class's top ``SIGNATURE_SHARE`` by the probe's loss, fit one logistic regression of that
   label on the probe's thumbnails over all classes, and add its logit to the loss. A hard
   upright image is hard in its own way, while every class's inverted images are inverted in
   the same way, so what the misfits share should single out the inverted ones. Scored on
   every training image (AUC and per-class top 5 % / 10 %, the probe's loss against the loss
   plus the logit, each robust-standardised per class) and as the loss column of the k-means
   (the logit scaled to the loss's MAD on the pool), on all three transforms as in 2.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from rdd.clustering import KMeansClusterer
from rdd.clustering.features import (
    fit_linear_probe,
    probe_loss,
    robust_scaling,
    standard_probe_inputs,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_scores import tail_row  # noqa: E402
from shape import load, rare_group_found  # noqa: E402

TRIMS = ((0.0, 0), (0.05, 1), (0.1, 1), (0.2, 1), (0.1, 3))  # (q, rounds); (0, 0): the default
WEIGHTS = (1.0, 1.5, 2.0, 3.0)
# Lever 3: the misfits' share of each class and the signature's inverse L2 strength (sklearn's
# C on standardised thumbnails), both chosen on seeds 0-1 of a scratch run of this measurement.
SIGNATURE_SHARE = 0.05
SIGNATURE_C = 0.1


def top_share(score: Tensor, labels: Tensor, classes: int, share: float) -> Tensor:
    """A mask of each class's top ``share`` of its images by ``score``."""
    chosen = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(classes):
        members = (labels == c).nonzero().squeeze(1)
        chosen[members[score[members].topk(round(share * len(members))).indices]] = True
    return chosen


def trimmed_probe_loss(
    images: Tensor, labels: Tensor, classes: int, share: float, rounds: int
) -> Tensor:
    """The probe's loss on every image after ``rounds`` refits without each class's top
    ``share`` by the previous fit's loss; ``rounds=0`` is the default probe."""
    loss = probe_loss(images, labels, fit_linear_probe(images, labels, classes))
    for _ in range(rounds):
        keep = ~top_share(loss, labels, classes, share)
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


class Signature:
    """What each class's misfits under the probe share: a logistic regression, over all
    classes, of "among its class's top ``SIGNATURE_SHARE`` by the probe's loss" on the
    probe's standardised thumbnails, fitted on a pool (``probe``: the probe fitted there,
    ``pool_loss``: its loss there)."""

    def __init__(self, images: Tensor, labels: Tensor, classes: int) -> None:
        self.probe = fit_linear_probe(images, labels, classes)
        self.pool_loss = probe_loss(images, labels, self.probe)
        misfit = top_share(self.pool_loss, labels, classes, SIGNATURE_SHARE)
        self.model = LogisticRegression(C=SIGNATURE_C, max_iter=3000)
        self.model.fit(self._standardised(images), misfit.numpy())

    def _standardised(self, images: Tensor):
        """The thumbnails standardised as the probe saw them."""
        return standard_probe_inputs(images, self.probe).double().numpy()

    def logit(self, images: Tensor) -> Tensor:
        return torch.from_numpy(self.model.decision_function(self._standardised(images))).float()


def robust_z(values: Tensor, labels: Tensor, classes: int) -> Tensor:
    """``values`` less their class's median, over their class's MAD-sigma."""
    z = torch.empty_like(values)
    for c in range(classes):
        mine = labels == c
        centre, scale = robust_scaling(values[mine].unsqueeze(1))
        z[mine] = (values[mine] - centre) / scale
    return z


def mad_sigma(values: Tensor) -> Tensor:
    return robust_scaling(values.unsqueeze(1))[1][0]


class SignatureLoss(KMeansClusterer):
    """``style_error`` clusters with the misfit signature's logit added to the loss column,
    scaled to the loss's MAD on the pool (then robust-scaled with it, as the loss alone is)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(features="style_error", **kwargs)
        self.signature: Signature | None = None

    def _fit_style_space(self, images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        # The signature fits its own probe on the pool, the same one the parent fits next
        # (deterministic): the parent's scaling must already see the signature's column.
        self.signature = Signature(images, labels, num_classes)
        logit = self.signature.logit(images)
        self.signature_weight = mad_sigma(self.signature.pool_loss) / mad_sigma(logit)
        return super()._fit_style_space(images, labels, num_classes)

    def _raw_style(self, images: Tensor, labels: Tensor | None) -> Tensor:
        raw = super()._raw_style(images, labels)
        raw[:, -1] += self.signature_weight * self.signature.logit(images)
        return raw


def signature_rows(data, seed: int) -> list[str]:
    """``tail_row``s of the probe's loss and of the loss plus the signature's logit on every
    training image, both fitted on the seed's pool."""
    classes = data.num_classes
    pool = KMeansClusterer(seed=seed).pool(data.train_y, classes)
    x, y = data.train_x[pool], data.train_y[pool]
    signature = Signature(x, y, classes)
    loss = probe_loss(data.train_x, data.train_y, signature.probe)
    logit = signature.logit(data.train_x)
    both = robust_z(loss, data.train_y, classes) + robust_z(logit, data.train_y, classes)
    return [
        tail_row(f"seed {seed}, {name}", score, data.train_y, data.train_subgroup, classes)
        for name, score in (("the probe's loss", loss), ("loss + signature", both))
    ]


def weight_row(data, transform: str, seed: int, weight: float) -> str:
    return group_row(data, transform, f"{weight:g}", seed, WeightedLoss(weight, seed=seed))


def group_row(data, transform: str, lever: str, seed: int, clusterer: KMeansClusterer) -> str:
    """``clusterer`` fitted on the seed's pool: ``auto``'s decision and the rare group's
    purity / recall over every training image."""
    pool = clusterer.pool(data.train_y, data.num_classes)
    clusterer.fit(data.train_x[pool], data.train_y[pool], data.num_classes)
    stats = clusterer.fit_stats()
    found = rare_group_found(clusterer, data)
    decision = "rare_vs_rest" if stats["cluster/merged"] else "clusters"
    return (
        f"| {transform} | {lever} | {seed} | {stats['cluster/separation']:.3f} | {decision} | "
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
    weights, scores, groups = [], [], []  # printed after the loop, each table whole
    for transform in ("invert", "grayscale", "blur"):
        data = data if transform == "invert" else load(args.root, transform)
        for weight in WEIGHTS:
            weights += [weight_row(data, transform, seed, weight) for seed in args.seeds]
        for seed in args.seeds:
            if transform == "invert":
                scores += signature_rows(data, seed)
            clusterer = SignatureLoss(seed=seed)
            groups.append(group_row(data, transform, "signature", seed, clusterer))
    header = "| transform | {} | seed | excess | auto decides | purity / recall % |\n"
    header += "|---" * 6 + "|"
    print("\n## 2. the loss column's weight\n\n" + header.format("weight"))
    print("\n".join(weights))
    print("\n## 3. a misfit signature\n\nThe score on every training image (invert):\n")
    print("| score | AUC | top 5%: purity / recall | top 10% |\n|---|---|---|---|")
    print("\n".join(scores))
    print("\nAs the loss column of the k-means:\n\n" + header.format("lever"))
    print("\n".join(groups))
    print(f"\n# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
