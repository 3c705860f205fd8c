"""Does a class's smallest cluster stand apart? Silhouettes for ``clustering.shape=auto``.

A rare subgroup that a style change makes (grey, blurred images) forms a small cluster far
from the rest of its class; a small cluster of ordinary images is one more mode among
several, as close to its neighbours as they are to each other. The silhouette of a point
(Rousseeuw 1987), ``(b - a) / max(a, b)`` with ``a`` its mean distance to its own cluster
and ``b`` its mean distance to the nearest other cluster, measures how far apart a point's
cluster is, in [-1, 1] and free of the features' scale. How clustered a class is at all
depends on the data and the feature space (scikit-learn's digits in the style space score
0.23-0.33 for the smallest cluster without any rare subgroup, CIFAR-10 0.15-0.23), so a
class's smallest cluster stands apart by its *excess*: its mean silhouette minus the mean
silhouette of all the class's points. benchmarks/subgroup_shift/shape*.txt have the figures
behind the default threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor


def point_silhouettes(features: Tensor, clusters: Tensor, k: int) -> Tensor:
    """The silhouette of every point, as ``sklearn.metrics.silhouette_samples``.

    Args:
        features: Points of one class, (n, D).
        clusters: Their clusters, (n,) int64 in [0, k).
        k: Number of clusters, >= 2.

    Returns:
        (n,) float64 ``(b - a) / max(a, b)``; 0 for a point alone in its cluster, and for
        every point when only one cluster has points.
    """
    sizes = torch.bincount(clusters, minlength=k)
    present = torch.nonzero(sizes).flatten()
    if len(present) < 2:
        return torch.zeros(len(clusters), dtype=torch.float64)
    distances = torch.cdist(features.double(), features.double())
    # (n, present) mean distance from every point to every non-empty cluster
    members = clusters.view(-1, 1) == present.view(1, -1)
    sums = distances @ members.double()
    own = members.int().argmax(dim=1)  # the column of the point's own cluster
    own_size = sizes[clusters].double()
    a = sums.gather(1, own.view(-1, 1)).squeeze(1) / (own_size - 1).clamp_min(1)
    means = sums / sizes[present].double()
    means.scatter_(1, own.view(-1, 1), float("inf"))  # b: the nearest *other* cluster
    b = means.min(dim=1).values
    scores = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
    return torch.where(own_size > 1, scores, torch.zeros_like(scores))


def smallest_cluster(clusters: Tensor, k: int) -> Tensor:
    """Which points are in the smallest of ``k`` clusters (the first, on a tie), (n,) bool."""
    return clusters == int(torch.bincount(clusters, minlength=k).argmin())


# clustering.rare_pick: which of a class's clusters is its candidate rare group.
RARE_PICKS = ("smallest", "apart")


def rare_cluster(features: Tensor, clusters: Tensor, k: int, pick: str, limit: float) -> int:
    """The cluster of one class that stands for its rare group.

    ``smallest``: the smallest cluster (the first, on a tie). ``apart``: of the clusters that
    hold under ``limit`` of the class's points (and at least two), the one whose points'
    mean silhouette is the highest, i.e. the cluster standing furthest apart; the smallest
    where none qualifies. A grey or blurred group that k-means splits off is far from the
    rest, while the smallest cluster is sometimes one more mode of ordinary images and the
    altered group a slightly larger cluster (benchmarks/subgroup_shift, section 18).

    Args:
        features: Points of one class, (n, D).
        clusters: Their clusters, (n,) int64 in [0, k).
        k: Number of clusters.
        pick: One of :data:`RARE_PICKS`.
        limit: ``apart``'s largest share of the class, in (0, 1].
    """
    sizes = torch.bincount(clusters, minlength=k)
    smallest = int(sizes.argmin())
    if pick == "smallest" or k < 2:
        return smallest
    candidates = (sizes >= 2) & (sizes.double() < limit * len(clusters))
    if not bool(candidates.any()):
        return smallest
    scores = point_silhouettes(features, clusters, k)
    means = torch.full((k,), -float("inf"), dtype=torch.float64)
    for j in torch.nonzero(candidates).flatten().tolist():
        means[j] = scores[clusters == j].mean()
    return int(means.argmax())


def smallest_cluster_silhouette(features: Tensor, clusters: Tensor, k: int) -> float:
    """Mean silhouette of the smallest cluster's points; 0 for a cluster of fewer than two
    points, which cannot stand apart (arguments as :func:`point_silhouettes`)."""
    smallest = smallest_cluster(clusters, k)
    if int(smallest.sum()) < 2:
        return 0.0
    return float(point_silhouettes(features, clusters, k)[smallest].mean())


def smallest_cluster_excess(
    features: Tensor, clusters: Tensor, k: int, pick: str = "smallest", limit: float = 1.0
) -> float:
    """How much further apart the smallest cluster (or the one :func:`rare_cluster` picks) is
    than the class's clusters are: its mean silhouette minus the mean over all points; 0 for a
    cluster of fewer than two points (arguments as :func:`point_silhouettes`)."""
    rare = clusters == rare_cluster(features, clusters, k, pick, limit)
    if int(rare.sum()) < 2:
        return 0.0
    scores = point_silhouettes(features, clusters, k)
    return float(scores[rare].mean() - scores.mean())


def class_separations(
    features: Tensor, labels: Tensor, clusters: Tensor, k: int, of=smallest_cluster_excess
) -> list[float]:
    """``of`` (:func:`smallest_cluster_excess`, or :func:`smallest_cluster_silhouette`) for
    every class present, in class order.

    Args:
        features: The clustered points, (N, D).
        labels: Their classes, (N,).
        clusters: Their clusters, (N,) int64 ``class * k + j``.
        k: Clusters per class.
    """
    return [
        of(features[labels == c], clusters[labels == c] - c * k, k)
        for c in labels.unique().tolist()
    ]


def rare_cluster_separation(
    features: Tensor,
    labels: Tensor,
    clusters: Tensor,
    k: int,
    pick: str = "smallest",
    limit: float = 1.0,
) -> float:
    """Mean over classes of :func:`smallest_cluster_excess` of the cluster ``pick`` chooses
    (arguments as :func:`class_separations` and :func:`rare_cluster`)."""

    def excess(class_features: Tensor, class_clusters: Tensor, k: int) -> float:
        return smallest_cluster_excess(class_features, class_clusters, k, pick, limit)

    scores = class_separations(features, labels, clusters, k, of=excess)
    return sum(scores) / len(scores)


def rare_clusters(
    features: Tensor,
    labels: Tensor,
    clusters: Tensor,
    num_classes: int,
    k: int,
    pick: str,
    limit: float,
) -> Tensor:
    """(num_classes,) int64: every class's :func:`rare_cluster` (local id in [0, k)); a class
    without points gets 0. ``clusters``: ids ``class * k + j`` as :func:`class_separations`."""
    picked = torch.zeros(num_classes, dtype=torch.int64)
    for c in labels.unique().tolist():
        members = labels == c
        picked[c] = rare_cluster(features[members], clusters[members] - c * k, k, pick, limit)
    return picked
