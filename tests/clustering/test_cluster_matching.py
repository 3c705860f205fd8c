"""Tests for rdd.clustering.matching and stable group ids across KMeansClusterer refits."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rdd.clustering import KMeansClusterer, match_clusters, per_class_kmeans, renumber


def permuted_refit(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Centroids (3, 4, 5) and groups, and the same fit with every class's ids permuted."""
    generator = torch.Generator().manual_seed(seed)
    num_classes, k = 3, 4
    previous = 10 * torch.randn(num_classes, k, 5, generator=generator)
    perms = torch.stack([torch.randperm(k, generator=generator) for _ in range(num_classes)])
    # Current cluster j of class c is previous cluster perms[c, j], moved a little.
    current = torch.gather(previous, 1, perms.unsqueeze(-1).expand_as(previous))
    current = current + 0.01 * torch.randn(current.shape, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(8)
    local = torch.randint(k, (labels.numel(),), generator=generator)
    groups = labels * k + local  # in the current numbering
    truth = labels * k + perms[labels, local]  # the same images in the previous numbering
    return previous, current, groups, truth, perms


def test_a_permuted_refit_gets_its_ids_mapped_back_exactly() -> None:
    previous, current, groups, truth, perms = permuted_refit()
    new_id = match_clusters(previous, current)
    assert new_id.dtype == torch.int64 and torch.equal(new_id, perms)
    centroids, renamed = renumber(current, groups, new_id)
    assert torch.equal(renamed, truth)
    assert torch.allclose(centroids, previous, atol=0.1)


def test_every_class_gets_a_permutation_even_when_clusters_moved_far() -> None:
    generator = torch.Generator().manual_seed(1)
    new_id = match_clusters(torch.randn(4, 5, 3, generator=generator), torch.randn(4, 5, 3))
    assert torch.equal(new_id.sort(dim=1).values, torch.arange(5).expand(4, 5))


def test_matching_needs_centroids_of_one_shape() -> None:
    with pytest.raises(ValueError, match="one shape"):
        match_clusters(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


def three_blobs_per_class(order_seed: int) -> tuple[Tensor, Tensor]:
    """Images (60, 1, 3, 3): two classes of three far-apart brightness blobs, shuffled."""
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.0, 5.0, 10.0, 20.0, 25.0, 30.0]).repeat_interleave(10)
    images = levels.view(-1, 1, 1, 1) + 0.1 * torch.randn(60, 1, 3, 3, generator=generator)
    labels = torch.arange(2).repeat_interleave(30)
    order = torch.randperm(60, generator=torch.Generator().manual_seed(order_seed))
    return images[order], labels[order]


def test_a_refit_of_kmeans_clusterer_keeps_the_group_ids() -> None:
    images, labels = three_blobs_per_class(order_seed=0)
    # Restarts: every seed then finds the three blobs, numbered as its draws fall.
    clusterer = KMeansClusterer(k=3, features="pixels", pool_per_class=None, nredo=10, seed=0)
    first = clusterer.fit(images, labels, num_classes=2)
    first_centroids = clusterer.centroids.clone()
    renamed_by_faiss = False
    for seed in range(1, 8):  # other k-means seeds: the same partition, other raw ids
        clusterer.seed = seed
        raw = per_class_kmeans(images.flatten(1), labels, 2, 3, seed, nredo=10)[1]
        renamed_by_faiss |= not torch.equal(raw, first)
        assert torch.equal(clusterer.fit(images, labels, num_classes=2), first)
        assert torch.allclose(clusterer.centroids, first_centroids, atol=1e-5)
        assert torch.equal(clusterer.assign(images, labels), first)
    assert renamed_by_faiss  # without the matching some refit would have renamed the groups
