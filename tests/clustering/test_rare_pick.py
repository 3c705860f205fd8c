"""clustering.rare_pick=apart: a class's candidate rare cluster is the one standing furthest
apart among its small clusters, not simply the smallest (rdd.clustering.separation), and
robust.allocation.rare_below widens which groups count as rare."""

from __future__ import annotations

import torch
from sklearn.metrics import silhouette_samples
from torch import Tensor

from rdd.clustering import KMeansClusterer
from rdd.clustering.kmeans_clusterer import rare_vs_rest_ids
from rdd.clustering.separation import rare_cluster, rare_clusters
from rdd.risk import CVaR
from rdd.robust.allocation import rare_groups, shared_allocation
from rdd.robust.ownership import AllocationSettings, allocate_class


def far_mode_beside_a_smaller_near_one(num_classes: int = 2) -> tuple[Tensor, Tensor]:
    """Per class a large blob (100), a small mode just beside it (6) and a slightly larger
    mode far off (12): (N, 1, 4, 4), in that order. The smallest cluster is the near mode,
    the one that stands apart the far one."""
    generator = torch.Generator().manual_seed(0)
    images, labels = [], []
    for label in range(num_classes):
        for centre, n in ((0.0, 100), (4.0, 6), (30.0, 12)):
            images.append(label * 100 + centre + torch.randn(n, 1, 4, 4, generator=generator))
            labels.append(torch.full((n,), label))
    return torch.cat(images), torch.cat(labels)


def test_apart_picks_the_small_cluster_with_the_highest_silhouette() -> None:
    """Against sklearn: among clusters under the limit, the highest mean silhouette wins."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(100, 3, generator=generator)
    clusters = torch.tensor([0] * 60 + [1] * 20 + [2] * 8 + [3] * 12)
    features[clusters == 3] += 6.0  # the 12 % cluster stands apart, the 8 % one does not
    scores = silhouette_samples(features.numpy(), clusters.numpy())
    means = [scores[clusters.numpy() == j].mean() for j in range(4)]
    assert max(range(4), key=lambda j: means[j]) == 3
    assert rare_cluster(features, clusters, 4, "smallest", 0.15) == 2
    assert rare_cluster(features, clusters, 4, "apart", 0.15) == 3
    # the 12 % cluster is over a 10 % limit: of the 8 % one alone, that one
    assert rare_cluster(features, clusters, 4, "apart", 0.10) == 2
    # no cluster under the limit: the smallest
    assert rare_cluster(features, clusters, 4, "apart", 0.05) == 2


def test_rare_clusters_per_class_and_their_ids() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(60, 2, generator=generator)
    labels = torch.tensor([0] * 30 + [1] * 30)
    local = torch.tensor([0] * 20 + [1] * 4 + [2] * 6 + [0] * 5 + [1] * 20 + [2] * 5)
    features[24:30] += 8.0  # class 0: cluster 2 (20 %) stands apart
    clusters = local + 3 * labels
    picked = rare_clusters(features, labels, clusters, 2, 3, "apart", 0.25)
    assert picked.tolist() == [2, rare_cluster(features[30:], local[30:], 3, "apart", 0.25)]
    smallest = rare_clusters(features, labels, clusters, 2, 3, "smallest", 0.25)
    # oracle: every class's smallest cluster is group 2c, its other clusters group 2c + 1
    sizes = torch.bincount(clusters, minlength=6).view(2, 3)
    expected = torch.tensor([2 * c + int(j != sizes[c].argmin()) for c in (0, 1) for j in range(3)])
    assert torch.equal(rare_vs_rest_ids(smallest, 3), expected)
    assert rare_vs_rest_ids(torch.tensor([2, 0]), 3).tolist() == [1, 1, 0, 2, 3, 3]


def test_the_clusterer_merges_the_far_mode_with_apart_and_the_near_one_by_default() -> None:
    images, labels = far_mode_beside_a_smaller_near_one()
    far = torch.cat([torch.arange(106, 118), torch.arange(224, 236)])
    near = torch.cat([torch.arange(100, 106), torch.arange(218, 224)])
    common = dict(k=3, features="pixels", pool_per_class=None, shape="rare_vs_rest", nredo=5)
    apart = KMeansClusterer(**common, rare_pick="apart", rare_limit=0.15)
    groups = apart.fit(images, labels, num_classes=2)
    assert (groups[far] % 2 == 0).all() and int((groups % 2 == 0).sum()) == 24
    smallest = KMeansClusterer(**common)
    groups = smallest.fit(images, labels, num_classes=2)
    assert (groups[near] % 2 == 0).all() and int((groups % 2 == 0).sum()) == 12


def test_rare_below_widens_the_groups_that_may_own_or_represent() -> None:
    """A 12 % group is not rare at IPC 10 under the default bound (it gets 1.2 images' worth
    of the shared ones) and buys nothing; under 1.5 images it is, and CVaR buys it images."""
    masses = torch.tensor([0.12, 0.88])
    assert rare_groups(masses, 10).tolist() == [False, False]
    assert rare_groups(masses, 10, below=1.5).tolist() == [True, False]
    assert shared_allocation(CVaR(0.5), masses, 10).tolist() == [0, 0, 10]
    wide = shared_allocation(CVaR(0.5), masses, 10, rare_below=1.5)
    assert int(wide[0]) >= 1 and int(wide[1]) == 0 and int(wide.sum()) == 10
    sizes = torch.tensor([12, 88])
    assert allocate_class(CVaR(0.5), sizes, 10, AllocationSettings()).tolist() == [0, 0, 10]
    by_settings = allocate_class(CVaR(0.5), sizes, 10, AllocationSettings(rare_below=1.5))
    assert torch.equal(by_settings, wide)
