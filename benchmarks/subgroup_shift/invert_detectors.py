"""Two more spaces for finding inverted images without labels: colour histograms and a
colourisation network's error.

    PYTHONPATH=src OMP_NUM_THREADS=2 .venv/bin/python benchmarks/subgroup_shift/invert_detectors.py \\
        <cifar10 root> [--transforms invert] > benchmarks/subgroup_shift/invert_detectors.txt

Inversion negates the luminance and both colour opponents, so every second-order statistic of
an image (contrast, chroma, the correlations between channels) is unchanged by it; only odd
ones (means, skews, layout) flip, and those are weak on CIFAR-10 (invert_statistics.txt).
Two spaces that see more than moments:

- **colour histograms**: per image, the histograms of luminance and of the two opponents
  (8 quantile bins each) and their joint chroma histogram (5 x 5), square-rooted (Hellinger).
  An inverted image has its class's complementary colours (an orange sky above a ship), which
  a class-wide histogram may single out better than a mean colour. Scored per class as
  ``style_separability.py`` scores the style statistics: a supervised bound (its linear
  discriminant, trained with the labels, out of fold), k-means at k=5 (purity / recall of the cluster
  holding most altered images, as in discovery.md) and a 10-nearest-neighbour anomaly score
  (purity of the top 5 %);
- **colourisation error**: a small dilated conv net trained for one epoch on every training
  image to predict the two colour opponents from the luminance (a self-supervised pretext that
  knows nothing of the subgroup); an image whose colours its shading does not predict has a
  high error. Scored by its AUC and top-5 % purity per class.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from torch import Tensor, nn

from rdd.clustering import robust_scaling
from rdd.clustering.discovery import class_rare_group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discovery import load  # noqa: E402
from style_separability import linear_rule_purity, top_share_purity  # noqa: E402

MARGINAL_BINS = 8
JOINT_BINS = 5
NEIGHBOURS = 10
K = 5
BATCH = 128


def opponents(images: Tensor) -> Tensor:
    """Luminance and the two colour opponents per pixel: (N, 3, H, W)."""
    red, green, blue = images.unbind(1)
    return torch.stack([(red + green + blue) / 3, red + green - 2 * blue, red - green], 1)


def quantile_edges(values: Tensor, bins: int, generator: torch.Generator) -> Tensor:
    """Inner bin edges at the quantiles of (a sample of) ``values``."""
    sample = values.flatten()[torch.randperm(values.numel(), generator=generator)[:200_000]]
    return torch.quantile(sample, torch.linspace(0, 1, bins + 1)[1:-1])


def histogram(values: Tensor, edges: Tensor) -> Tensor:
    """Per-row histogram of ``values`` (N, P) over the bins that ``edges`` bound: (N, bins)."""
    index = torch.bucketize(values.contiguous(), edges)
    counts = torch.zeros(values.shape[0], len(edges) + 1, dtype=values.dtype)
    return counts.scatter_add_(1, index, torch.ones_like(values)) / values.shape[1]


def colour_histograms(images: Tensor, seed: int = 0) -> np.ndarray:
    """Marginal histograms of the three opponent channels and the joint chroma histogram,
    square-rooted: (N, 3 * MARGINAL_BINS + JOINT_BINS ** 2)."""
    generator = torch.Generator().manual_seed(seed)
    channels = opponents(images).flatten(2)  # (N, 3, P)
    sample = channels[torch.randperm(len(images), generator=generator)[:2000]]
    parts = [
        histogram(channels[:, c], quantile_edges(sample[:, c], MARGINAL_BINS, generator))
        for c in range(3)
    ]
    yellow_blue, red_green = (
        torch.bucketize(
            channels[:, c].contiguous(), quantile_edges(sample[:, c], JOINT_BINS, generator)
        )
        for c in (1, 2)
    )
    joint = yellow_blue * JOINT_BINS + red_green
    parts.append(histogram(joint.double(), torch.arange(JOINT_BINS**2 - 1) + 0.5))
    return torch.cat([p.double() for p in parts], 1).sqrt().numpy()


def robust_scale(features: np.ndarray) -> np.ndarray:
    """Median/MAD-scaled, as the clusterer scales its style space (a zero-MAD bin: scale 1)."""
    centre, scale = robust_scaling(torch.from_numpy(features))
    return ((features - centre.double().numpy()) / scale.double().numpy()).astype(features.dtype)


def kmeans_purity_recall(features: np.ndarray, altered: np.ndarray) -> tuple[float, float]:
    """Purity and recall of the k-means cluster holding most altered images (as discovery.md)."""
    clusters = torch.from_numpy(KMeans(K, n_init=4, random_state=0).fit_predict(features))
    return class_rare_group(clusters.long(), torch.from_numpy(altered).bool(), K)


def neighbour_purity(features: np.ndarray, altered: np.ndarray) -> float:
    distances, _ = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(features).kneighbors(features)
    return top_share_purity(distances[:, 1:].mean(1), altered)


def histogram_scores(images: Tensor, labels: np.ndarray, altered: np.ndarray) -> list[float]:
    features = colour_histograms(images)
    per_class = []
    for c in np.unique(labels):
        class_features, class_altered = robust_scale(features[labels == c]), altered[labels == c]
        per_class.append(
            (
                linear_rule_purity(class_features, class_altered),
                *kmeans_purity_recall(class_features, class_altered),
                neighbour_purity(class_features, class_altered),
            )
        )
    return np.mean(per_class, 0).tolist()


def colouriser() -> nn.Module:
    """Luminance (1 channel) -> two opponents, with a receptive field of the whole image."""
    layers, channels = [], 1
    for dilation in (1, 2, 4, 8):
        layers += [nn.Conv2d(channels, 64, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        channels = 64
    return nn.Sequential(*layers, nn.Conv2d(channels, 2, 1))


def colourisation_error(images: Tensor, seed: int = 0) -> np.ndarray:
    """Per-image squared error of a colouriser trained one epoch on ``images``: (N,)."""
    torch.manual_seed(seed)
    net, split = colouriser(), opponents(images)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for rows in torch.randperm(len(images)).split(BATCH):
        batch = split[rows]
        loss = (net(batch[:, :1]) - batch[:, 1:]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        errors = [
            (net(chunk[:, :1]) - chunk[:, 1:]).pow(2).mean((1, 2, 3)) for chunk in split.split(1000)
        ]
    return torch.cat(errors).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="CIFAR-10 root (the JPEG folders)")
    parser.add_argument("--transforms", nargs="+", default=["invert"])
    args = parser.parse_args()
    print(f"# {shlex.join(sys.argv[1:])}\n")
    print(
        f"Machine: {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s).\n"
    )
    print(
        "| transform | space | supervised top-5 % purity | k-means k=5 purity / recall | "
        "10-NN anomaly top-5 % purity | AUC |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for transform in args.transforms:
        data, _ = load(args.root, transform)
        labels, altered = data.train_y.numpy(), data.train_subgroup.numpy().astype(int)
        start = time.process_time()
        supervised, purity, recall, anomaly = histogram_scores(data.train_x, labels, altered)
        print(
            f"| {transform} | colour histograms | {supervised:.2f} | {purity:.2f} / {recall:.2f} "
            f"| {anomaly:.2f} | |"
        )
        errors = colourisation_error(data.train_x)
        classes = np.unique(labels)
        auc = np.mean([roc_auc_score(altered[labels == c], errors[labels == c]) for c in classes])
        top = np.mean(
            [top_share_purity(errors[labels == c], altered[labels == c]) for c in classes]
        )
        print(f"| {transform} | colourisation error | | | {top:.2f} | {auc:.3f} |")
        print(f"\n({transform}: {time.process_time() - start:.0f} CPU s)\n", flush=True)


if __name__ == "__main__":
    main()
