"""How far can the style statistics single out a rare subgroup at all? A supervised bound.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/style_separability.py \\
        <cifar10 root> [--transforms grayscale invert blur] > benchmarks/subgroup_shift/style_separability.txt

Discovery (discovery.md) scores k-means, which never sees which images are altered. This
script asks the question above it: given the labels, how well does the best *linear* rule on
the same seven statistics (``clustering.features=style``) rank a class's altered images first?
Per class, a linear discriminant is fitted on the statistics with the altered flag as target
and scored out of fold (5 folds); the share of altered images among the class's top 5 % by its
out-of-fold probability is the rule's purity (5 % is the subgroup's share, so purity equals
recall there). No unsupervised grouping of these statistics can beat a supervised linear rule
on them by much, so a low figure says the space itself, not k-means, is what fails.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from rdd.clustering.features import style_statistics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discovery import load  # noqa: E402

TOP_SHARE = 0.05
FOLDS = 5


def top_share_purity(scores: np.ndarray, altered: np.ndarray, share: float = TOP_SHARE) -> float:
    """Share of altered images among the ``share`` highest-scored images."""
    top = np.argsort(-scores, kind="stable")[: max(1, round(share * len(scores)))]
    return float(altered[top].mean())


def linear_rule_purity(features: np.ndarray, altered: np.ndarray, seed: int = 0) -> float:
    """Out-of-fold purity of a linear discriminant trained to find the altered images."""
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    probability = cross_val_predict(
        LinearDiscriminantAnalysis(), features, altered, cv=folds, method="predict_proba"
    )[:, 1]
    return top_share_purity(probability, altered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="CIFAR-10 root (the JPEG folders)")
    parser.add_argument("--transforms", nargs="+", default=["grayscale", "invert", "blur"])
    args = parser.parse_args()
    print(f"# {shlex.join(sys.argv[1:])}\n")
    print(
        f"Machine: {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s).\n"
    )
    print("| transform | purity of the top 5 % (mean over classes) | per class |")
    print("| --- | --- | --- |")
    for transform in args.transforms:
        data, _ = load(args.root, transform)
        features = style_statistics(data.train_x).double().numpy()
        labels = data.train_y.numpy()
        altered = data.train_subgroup.numpy().astype(int)
        per_class = [
            linear_rule_purity(features[labels == c], altered[labels == c])
            for c in range(data.num_classes)
        ]
        cells = " ".join(f"{p:.2f}" for p in per_class)
        print(f"| {transform} | {np.mean(per_class):.2f} | {cells} |")


if __name__ == "__main__":
    main()
