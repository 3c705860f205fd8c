"""Does a class's smallest cluster stand apart? Silhouettes for ``clustering.shape=auto``.

A rare subgroup that a style change makes (grey, blurred images) forms a small cluster far
from the rest of its class; a small cluster of ordinary images is one more mode among
several, close to its neighbours. The silhouette of a point (Rousseeuw 1987),
``(b - a) / max(a, b)`` with ``a`` its mean distance to its own cluster and ``b`` its mean
distance to the nearest other cluster, measures exactly that, in [-1, 1] and free of the
features' scale. benchmarks/subgroup_shift/shape.txt has the figures behind the default
threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor


def smallest_cluster_silhouette(features: Tensor, clusters: Tensor, k: int) -> float:
    """Mean silhouette of the points of the smallest of ``k`` clusters (the first, on a tie).

    Args:
        features: Points of one class, (n, D).
        clusters: Their clusters, (n,) int64 in [0, k).
        k: Number of clusters, >= 2.

    Returns:
        The mean over the smallest cluster's points of ``(b - a) / max(a, b)``; 0 for a
        cluster of one point (as ``sklearn.metrics.silhouette_samples``), or when no other
        cluster has points.
    """
    sizes = torch.bincount(clusters, minlength=k)
    smallest = int(sizes.argmin())
    own = clusters == smallest
    others = [j for j in range(k) if j != smallest and sizes[j] > 0]
    if int(sizes[smallest]) < 2 or not others:
        return 0.0
    distances = torch.cdist(features[own].double(), features.double())
    a = distances[:, own].sum(dim=1) / (int(sizes[smallest]) - 1)  # itself at distance 0
    b = torch.stack([distances[:, clusters == j].mean(dim=1) for j in others]).min(dim=0).values
    return float(((b - a) / torch.maximum(a, b).clamp_min(1e-12)).mean())


def class_silhouettes(features: Tensor, labels: Tensor, clusters: Tensor, k: int) -> list[float]:
    """:func:`smallest_cluster_silhouette` of every class present, in class order.

    Args:
        features: The clustered points, (N, D).
        labels: Their classes, (N,).
        clusters: Their clusters, (N,) int64 ``class * k + j``.
        k: Clusters per class.
    """
    return [
        smallest_cluster_silhouette(features[labels == c], clusters[labels == c] - c * k, k)
        for c in labels.unique().tolist()
    ]


def rare_cluster_separation(features: Tensor, labels: Tensor, clusters: Tensor, k: int) -> float:
    """Mean over classes of :func:`smallest_cluster_silhouette` (arguments as
    :func:`class_silhouettes`)."""
    scores = class_silhouettes(features, labels, clusters, k)
    return sum(scores) / len(scores)
