"""Are inverted images the low-density tail of their class's style statistics?

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/style_density.py \\
        <cifar10 root> [--transforms invert blur grayscale] > benchmarks/subgroup_shift/style_density.txt

A detector that is not made for one transform: per class, the seven style statistics
(``clustering.features=style``), scaled by their median and MAD, scored by their density
under the class's own distribution: a robust Mahalanobis distance (scikit-learn's MinCovDet,
fitted on every fourth image, support fraction 0.9, seed 0) and the mean distance to the 10
nearest neighbours. Against ``data.subgroup``'s mask (5 % of every class altered): the AUC
(P(altered scores above unaltered)) and the purity of the top 5 % of the class, means over
the classes. Section 7 of this folder's README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import MinCovDet
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discovery import load  # noqa: E402
from invert_statistics import auc  # noqa: E402

from rdd.clustering.features import robust_scaling, style_statistics  # noqa: E402

NEIGHBOURS, TAIL = 10, 0.05


def density_scores(z: np.ndarray) -> dict[str, np.ndarray]:
    """Higher: rarer under the class's own style distribution."""
    mahalanobis = MinCovDet(random_state=0, support_fraction=0.9).fit(z[::4]).mahalanobis(z)
    distances, _ = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(z).kneighbors(z)
    return {"mahalanobis": mahalanobis, "knn": distances[:, 1:].mean(1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="CIFAR-10 root with train/<class>/ JPEGs")
    parser.add_argument("--transforms", nargs="+", default=["invert", "blur", "grayscale"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("transform | score | AUC | top-5 % purity (means over classes)")
    for transform in args.transforms:
        data, _ = load(args.root, transform)
        features = style_statistics(data.train_x)
        results: dict[str, list[tuple[float, float]]] = {}
        for c in range(data.num_classes):
            mine = data.train_y == c
            altered = data.train_subgroup[mine].numpy().astype(bool)
            centre, scale = robust_scaling(features[mine])
            z = ((features[mine] - centre) / scale).numpy()
            for name, score in density_scores(z).items():
                top = np.argsort(-score)[: int(TAIL * len(score))]
                area = auc(torch.tensor(score[altered]), torch.tensor(score[~altered]))
                results.setdefault(name, []).append((area, altered[top].mean()))
        for name, values in results.items():
            area, purity = np.mean(values, axis=0)
            print(f"{transform} | {name} | {area:.3f} | {purity:.3f}", flush=True)


if __name__ == "__main__":
    main()
