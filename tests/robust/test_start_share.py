"""Synthetic images start from their group's typical members (robust.allocation.start_share):
the margins k-means assigns with, the draw from a group's deepest members, and a run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from rdd.clustering import KMeansClusterer, KnownSubgroups
from rdd.clustering.kmeans_clusterer import group_margins
from rdd.distill.realpool import RealPool
from rdd.risk import CVaR
from rdd.robust.ownership import AllocationSettings, group_draw
from rdd.robust.plan import RobustPlan
from tests.robust.test_robust_layer import K, learner_for, real_data


def brute_force_margins(features, labels, groups, centroids, centroid_groups) -> np.ndarray:
    """The margin of every point by a loop over its class's centroids (the oracle)."""
    k = centroids.shape[1]
    out = np.zeros(len(labels))
    for i, (x, c, g) in enumerate(zip(features, labels, groups, strict=True)):
        inside, outside = np.inf, np.inf
        for j in range(k):
            d = float(np.sqrt(((x - centroids[c, j]) ** 2).sum()))
            if centroid_groups[c * k + j] == g:
                inside = min(inside, d)
            else:
                outside = min(outside, d)
        out[i] = 0.0 if np.isinf(outside) else outside - inside
    return out


def test_group_margins_equal_a_loop_over_the_centroids() -> None:
    """Two classes of three centroids, the first merged rare-vs-rest (centroid 0 alone, 1
    and 2 together) and the second one group per centroid; the points' groups are those of
    their nearest centroid, as k-means assigns them."""
    gen = np.random.default_rng(0)
    centroids = gen.normal(size=(2, 3, 4))
    features = gen.normal(size=(60, 4))
    labels = np.repeat([0, 1], 30)
    centroid_groups = np.array([0, 1, 1, 2, 3, 4])
    nearest = np.array(
        [np.argmin(((centroids[c] - x) ** 2).sum(1)) for x, c in zip(features, labels, strict=True)]
    )
    groups = centroid_groups[labels * 3 + nearest]
    want = brute_force_margins(features, labels, groups, centroids, centroid_groups)
    got = group_margins(
        torch.tensor(features, dtype=torch.float32),
        torch.tensor(labels),
        torch.tensor(groups),
        torch.tensor(centroids, dtype=torch.float32),
        torch.tensor(centroid_groups),
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    assert (want >= 0).all() and (want[labels == 0] > 0).any()


def test_a_class_with_one_group_has_margin_zero() -> None:
    features, labels = torch.randn(5, 2), torch.zeros(5, dtype=torch.int64)
    centroids = torch.randn(1, 2, 2)
    margins = group_margins(features, labels, labels, centroids, torch.zeros(2, dtype=torch.int64))
    assert torch.equal(margins, torch.zeros(5))


@pytest.mark.parametrize("shape", ["clusters", "rare_vs_rest"])
def test_kmeans_assigns_the_same_groups_with_their_margins(shape) -> None:
    x, y = real_data()
    clusterer = KMeansClusterer(k=3, features="pixels", seed=0, shape=shape)
    clusterer.fit(x, y, K)
    groups, margins = clusterer.assign_with_margins(x, y)
    assert torch.equal(groups, clusterer.assign(x, y))
    assert margins.shape == (len(y),) and margins.dtype == torch.float32
    assert float(margins.min()) >= -1e-5  # every image sits in its nearest centroid's group


def test_a_clusterer_without_centroids_gives_no_margins() -> None:
    x, y = real_data()
    altered = torch.zeros(len(y), dtype=torch.bool)
    altered[::7] = True
    clusterer = KnownSubgroups(altered)
    clusterer.fit(x, y)
    groups, margins = clusterer.assign_with_margins(x, y)
    assert margins is None and torch.equal(groups, clusterer.assign(x, y))


def pool_with_margins() -> RealPool:
    """Class 0's 40 images in one group whose margins rank them 39, 38, ..., 0."""
    _, y = real_data()
    pool = RealPool(y, K)
    margins = torch.zeros(len(y))
    margins[:40] = torch.arange(39, -1, -1, dtype=torch.float32)
    pool.set_groups(y.clone(), 1, margins)
    return pool


def test_a_start_is_drawn_from_the_groups_deepest_share() -> None:
    pool = pool_with_margins()
    drawn = pool.draw_start(0, 6, 0.25, torch.Generator().manual_seed(0))
    assert len(drawn) == 6 and len(drawn.unique()) == 6
    assert bool((drawn < 10).all())  # the 10 of 40 with the largest margins
    # more images than the share holds: the n deepest
    assert sorted(pool.draw_start(0, 12, 0.25, torch.Generator()).tolist()) == list(range(12))


def test_share_one_or_no_margins_draws_as_before() -> None:
    pool = pool_with_margins()
    for share, margins in itertools.product([1.0, 0.5], [True, False]):
        if not margins:
            pool.margins = None
        if share < 1 and margins:
            continue
        a = pool.draw_start(0, 6, share, torch.Generator().manual_seed(3))
        b = pool.draw_group(0, 6, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_group_draw_takes_every_rows_start_from_its_groups_share() -> None:
    _, y = real_data()
    pool = RealPool(y, K)
    groups = 2 * y
    groups[::2] += 1  # two groups of 20 per class
    margins = torch.arange(len(y), dtype=torch.float32)  # later images lie deeper
    pool.set_groups(groups, 2, margins)
    owners = torch.tensor([0, 0, 1, 3, 3, 3])
    idx = group_draw(pool, owners, torch.Generator().manual_seed(0), share=0.25)
    assert torch.equal(pool.groups[idx], owners)
    for group in owners.unique().tolist():
        deepest = pool.members[group][-5:]  # the 5 of 20 with the largest margins
        assert set(idx[owners == group].tolist()) <= set(deepest.tolist())


def test_margins_survive_a_checkpoint() -> None:
    pool = pool_with_margins()
    restored = RealPool(pool.labels, K)
    restored.load_state(pool.state())
    assert torch.equal(restored.margins, pool.margins)
    old = {"groups": pool.groups, "groups_per_class": 1}  # before start_share
    restored.load_state(old)
    assert restored.margins is None


def test_a_run_starts_its_owned_images_from_deep_members() -> None:
    """Owned images (every image owned, min 1 per group) restart from real images; with
    start_share 0.25 each one equals a real image of its group among the quarter with the
    largest margins, right after the learner's grouping and allocation at iteration 0."""
    settings = AllocationSettings(
        min_per_group=8, train_steps=5, shared=False, min_images=1, start_share=0.25
    )
    clusterer = KMeansClusterer(k=2, features="pixels", seed=0, every=None)
    learner = learner_for(CVaR(0.5), clusterer, RobustPlan(matching=True), allocation=settings)
    learner.regroup(None)  # pixels: the fit needs no network
    x, _ = real_data()
    pool, own = learner.pool, learner.ownership
    assert pool.margins is not None
    for row, group in enumerate(own.owners.tolist()):
        members = pool.members[group]
        keep = max(1, -(-len(members) // 4))
        deepest = members[pool.margins[members].argsort(descending=True, stable=True)[:keep]]
        distance = (x[deepest] - learner.images[row].detach()).flatten(1).abs().amax(1)
        assert float(distance.min()) == 0.0, (row, group)
