"""clustering.shape=auto: merge a class's clusters into its smallest and the rest only where
the smallest clusters stand apart from their classes more than the classes' clusters do
(rdd.clustering.separation), against sklearn's silhouette."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import silhouette_samples
from torch import Tensor

from rdd.clustering import KMeansClusterer
from rdd.clustering.separation import (
    point_silhouettes,
    rare_cluster_separation,
    smallest_cluster_excess,
    smallest_cluster_silhouette,
)


def far_small_mode(num_classes: int = 2) -> tuple[Tensor, Tensor]:
    """Per class one large blob, which k-means cuts into touching pieces, and a small mode
    far off: (N, 1, 4, 4), the small mode last in every class."""
    generator = torch.Generator().manual_seed(0)
    images, labels = [], []
    for label in range(num_classes):
        for centre, n in ((0.0, 40), (10.0, 4)):
            images.append(label * 100 + centre + torch.randn(n, 1, 4, 4, generator=generator))
            labels.append(torch.full((n,), label))
    return torch.cat(images), torch.cat(labels)


def one_blob(num_classes: int = 2, n: int = 60) -> tuple[Tensor, Tensor]:
    """Per class one Gaussian blob, which k-means can only cut into touching pieces."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(num_classes * n, 1, 4, 4, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(n)
    return images + 100 * labels.view(-1, 1, 1, 1), labels


def test_smallest_cluster_silhouette_matches_sklearn() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(40, 3, generator=generator)
    clusters = torch.tensor([0] * 15 + [1] * 12 + [2] * 6 + [3] * 7)  # smallest: 2
    features[clusters == 2] += 3.0
    expected = silhouette_samples(features.numpy(), clusters.numpy())[clusters.numpy() == 2]
    assert smallest_cluster_silhouette(features, clusters, 4) == pytest.approx(expected.mean())


def test_point_silhouettes_match_sklearn_with_a_singleton_and_an_empty_cluster() -> None:
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(30, 4, generator=generator)
    clusters = torch.tensor([0] * 10 + [1] * 9 + [3] * 10 + [4])  # 2 empty, 4 a singleton
    expected = silhouette_samples(features.numpy(), clusters.numpy())
    assert point_silhouettes(features, clusters, 5).numpy() == pytest.approx(expected, abs=1e-6)


def test_the_excess_is_the_smallest_clusters_silhouette_less_the_class_mean() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(40, 3, generator=generator)
    clusters = torch.tensor([0] * 15 + [1] * 12 + [2] * 6 + [3] * 7)  # smallest: 2
    features[clusters == 2] += 3.0
    scores = silhouette_samples(features.numpy(), clusters.numpy())
    expected = scores[clusters.numpy() == 2].mean() - scores.mean()
    assert smallest_cluster_excess(features, clusters, 4) == pytest.approx(expected, abs=1e-6)
    assert expected > 0.2  # the moved cluster stands apart


def test_a_singleton_or_a_lone_cluster_scores_zero() -> None:
    features = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    assert smallest_cluster_silhouette(features, torch.tensor([0, 0, 0, 0, 1]), 2) == 0.0
    assert smallest_cluster_silhouette(features, torch.zeros(5, dtype=torch.int64), 2) == 0.0


def test_the_separation_is_the_mean_over_classes() -> None:
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(30, 2, generator=generator)
    labels = torch.tensor([0] * 12 + [1] * 18)
    local = torch.tensor([0] * 4 + [1] * 8 + [0] * 9 + [1] * 3 + [2] * 6)  # k = 3
    per_class = [
        smallest_cluster_excess(features[:12], local[:12], 3),
        smallest_cluster_excess(features[12:], local[12:], 3),
    ]
    separation = rare_cluster_separation(features, labels, local + 3 * labels, 3)
    assert separation == pytest.approx(sum(per_class) / 2)


def test_auto_merges_where_the_smallest_clusters_stand_apart() -> None:
    images, labels = far_small_mode()
    auto = KMeansClusterer(k=3, features="pixels", pool_per_class=None)
    groups = auto.fit(images, labels, num_classes=2)
    stats = auto.fit_stats()
    assert stats["cluster/separation"] > 0.3 and stats["cluster/merged"] == 1.0
    assert auto.num_groups(2) == 4
    merged = KMeansClusterer(k=3, features="pixels", pool_per_class=None, shape="rare_vs_rest")
    assert torch.equal(groups, merged.fit(images, labels, num_classes=2))
    small = torch.cat([torch.arange(40, 44), torch.arange(84, 88)])
    assert (groups[small] % 2 == 0).all() and (groups[groups % 2 == 0].numel() == 8)


def test_auto_keeps_the_clusters_where_nothing_stands_apart() -> None:
    images, labels = one_blob()
    auto = KMeansClusterer(k=3, features="pixels", pool_per_class=None)
    groups = auto.fit(images, labels, num_classes=2)
    assert auto.fit_stats()["cluster/separation"] < auto.apart
    assert auto.fit_stats()["cluster/merged"] == 0.0
    assert auto.num_groups(2) == 6
    plain = KMeansClusterer(k=3, features="pixels", pool_per_class=None, shape="clusters")
    assert torch.equal(groups, plain.fit(images, labels, num_classes=2))
    assert torch.equal(auto.assign(images, labels), plain.assign(images, labels))


def test_auto_keeps_a_small_mode_no_further_apart_than_the_others() -> None:
    """Three separate modes, the smallest as far from the others as they are from each
    other: its silhouette is high (the old absolute statistic merged at 0.3), its excess
    over the class's mean is not, so auto keeps the clusters."""
    generator = torch.Generator().manual_seed(6)
    images, labels = [], []
    for label in range(2):
        for centre, n in ((0.0, 20), (10.0, 20), (20.0, 4)):
            images.append(label * 100 + centre + torch.randn(n, 1, 4, 4, generator=generator))
            labels.append(torch.full((n,), label))
    images, labels = torch.cat(images), torch.cat(labels)
    # restarts, so that k-means finds the three modes in both classes (one start does not)
    auto = KMeansClusterer(k=3, features="pixels", pool_per_class=None, nredo=10)
    auto.fit(images, labels, num_classes=2)
    features = auto.features_of(images)
    local = auto.assignments - 3 * labels
    assert smallest_cluster_silhouette(features[labels == 0], local[labels == 0], 3) > 0.7
    assert abs(auto.fit_stats()["cluster/separation"]) < 0.05
    assert auto.fit_stats()["cluster/merged"] == 0.0 and auto.num_groups(2) == 6


def test_auto_decides_once_and_keeps_it_through_refits_and_a_checkpoint() -> None:
    """The number of groups must not change within a run: a refit that would not merge keeps
    the first fit's decision, and so does a clusterer loaded from the state dict."""
    images, labels = far_small_mode()
    auto = KMeansClusterer(k=3, features="pixels", pool_per_class=None)
    with pytest.raises(ValueError, match="fit"):
        auto.num_groups(2)
    auto.fit(images, labels, num_classes=2)
    separation = auto.fit_stats()["cluster/separation"]
    blob, blob_labels = one_blob()
    refit = auto.fit(blob, blob_labels, num_classes=2)
    assert auto.num_groups(2) == 4 and int(refit.max()) == 3
    assert auto.fit_stats()["cluster/separation"] == separation
    fresh = KMeansClusterer(k=3, features="pixels", pool_per_class=None)
    fresh.load_state_dict(auto.state_dict())
    assert fresh.num_groups(2) == 4
    assert torch.equal(fresh.assign(blob, blob_labels), auto.assign(blob, blob_labels))


def test_with_two_clusters_auto_keeps_faiss_order() -> None:
    """k = 2 has nothing to merge: auto leaves the ids as the clusters have them."""
    images, labels = far_small_mode()
    auto = KMeansClusterer(k=2, features="pixels", pool_per_class=None)
    plain = KMeansClusterer(k=2, features="pixels", pool_per_class=None, shape="clusters")
    assert torch.equal(
        auto.fit(images, labels, num_classes=2), plain.fit(images, labels, num_classes=2)
    )
    assert auto.fit_stats()["cluster/merged"] == 0.0
