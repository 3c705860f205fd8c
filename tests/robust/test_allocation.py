"""The allocation of synthetic images to subgroups, per risk, on hand-made loss curves, and the
debiased per-group distance (against a Gaussian oracle)."""

from __future__ import annotations

import itertools

import pytest
import torch

from rdd.matching.robust import debiased_sq_distance
from rdd.risk import CVaR, Entropic, MaxGroup, MeanRisk
from rdd.risk.two_level import TwoLevel
from rdd.robust.allocation import (
    effective_counts,
    favoured_groups,
    greedy_allocation,
    modelled_losses,
    rare_groups,
    risk_value,
    shared_allocation,
)

RARE = torch.tensor([0.95, 0.05])  # a class's common and rare group
MEASURED = torch.tensor([1.0, 2.0])  # the rare group's loss is twice the common one's
ANCHORS = torch.tensor([9, 1])  # ... measured with 9 and 1 images


def allocate(risk, masses=RARE, total=10, minimum=1, measured=MEASURED, anchors=ANCHORS):
    return greedy_allocation(risk, masses, total, minimum, measured, anchors).tolist()


def brute_force(risk, masses, total, minimum, measured, anchors) -> float:
    """The lowest risk over every allocation (the greedy rule's oracle on small cases)."""
    best = float("inf")
    for counts in itertools.product(range(minimum, total + 1), repeat=len(masses)):
        if sum(counts) == total:
            losses = modelled_losses(measured, anchors, torch.tensor(counts), 0.5)
            best = min(best, risk_value(risk, losses, masses.double()))
    return best


def test_the_loss_model_is_the_measurement_at_its_anchor_and_falls_with_images() -> None:
    losses = modelled_losses(MEASURED, ANCHORS, ANCHORS, 0.5)
    torch.testing.assert_close(losses, MEASURED.double())
    more = modelled_losses(MEASURED, ANCHORS, ANCHORS + 1, 0.5)
    assert bool((more < losses).all())
    # doubling (c + 1) divides the loss by sqrt(2)
    assert float(
        modelled_losses(MEASURED, ANCHORS, torch.tensor([19, 3]), 0.5)[0]
    ) == pytest.approx(1 / 2**0.5)


def test_the_mean_gives_a_near_proportional_split() -> None:
    """Nothing measured: the 5 % group gets its minimum, the rest goes to the 95 %."""
    assert greedy_allocation(CVaR(0.0), RARE, 10).tolist() == [9, 1]
    three = greedy_allocation(CVaR(0.0), torch.tensor([0.5, 0.3, 0.2]), 10).tolist()
    assert three == [5, 3, 2]


def test_max_group_equalises_the_losses_and_never_starves_the_majority() -> None:
    counts = allocate(MaxGroup())
    losses = modelled_losses(MEASURED, ANCHORS, torch.tensor(counts), 0.5)
    assert counts[1] > 1 and counts[0] >= 1
    # one image more or less for the rare group would leave a larger worst loss
    for shift in (-1, 1):
        other = torch.tensor([counts[0] - shift, counts[1] + shift])
        assert float(modelled_losses(MEASURED, ANCHORS, other, 0.5).max()) >= float(losses.max())
    # nothing measured: equal losses for equal counts, so the groups split evenly
    assert greedy_allocation(MaxGroup(), RARE, 10).tolist() == [5, 5]


def test_cvar_and_entropic_sit_between_the_mean_and_the_max() -> None:
    mean, worst = allocate(CVaR(0.0))[1], allocate(MaxGroup())[1]
    for risk in (CVaR(0.5), CVaR(0.9), Entropic(1.0), Entropic(5.0)):
        assert mean <= allocate(risk)[1] <= worst, risk
    assert allocate(CVaR(0.5))[1] <= allocate(CVaR(0.9))[1]
    assert allocate(Entropic(1.0))[1] <= allocate(Entropic(5.0))[1]


@pytest.mark.parametrize(
    "risk", [CVaR(0.0), CVaR(0.5), CVaR(0.9), MaxGroup(), Entropic(2.0), MeanRisk()]
)
def test_the_greedy_allocation_reaches_the_best_risk_on_small_cases(risk) -> None:
    gen = torch.Generator().manual_seed(0)
    cases = [
        (torch.tensor([0.6, 0.3, 0.1]), torch.tensor([1.0, 1.5, 3.0]), torch.tensor([3, 2, 1]))
    ]
    for _ in range(6):  # random classes of 3 groups
        masses = torch.rand(3, generator=gen) + 0.02
        cases.append(
            (
                masses / masses.sum(),
                1 + 2 * torch.rand(3, generator=gen),
                torch.randint(1, 5, (3,), generator=gen),
            )
        )
    for masses, measured, anchors in cases:
        counts = greedy_allocation(risk, masses, 8, 1, measured, anchors)
        assert int(counts.sum()) == 8 and int(counts.min()) >= 1
        got = risk_value(risk, modelled_losses(measured, anchors, counts, 0.5), masses.double())
        want = brute_force(risk, masses, 8, 1, measured, anchors)
        assert got == pytest.approx(want, rel=1e-9)


def test_two_level_is_mean_plus_max_between_groups() -> None:
    losses, masses = torch.tensor([1.0, 3.0]), torch.tensor([0.9, 0.1])
    assert risk_value(TwoLevel(lam=1.0), losses, masses) == pytest.approx((2.0 + 3.0) / 2)


def test_the_minimum_is_honoured_and_a_budget_below_it_is_refused() -> None:
    assert greedy_allocation(CVaR(0.0), RARE, 10, minimum=3).tolist() == [7, 3]
    tiny = torch.tensor([0.99, 0.01])
    assert greedy_allocation(CVaR(0.0), tiny, 10, minimum=0).tolist() == [10, 0]
    with pytest.raises(ValueError, match="cannot give 2 groups 6 each"):
        greedy_allocation(CVaR(0.0), RARE, 10, minimum=6)


def test_the_debiased_squared_distance_is_unbiased_on_a_gaussian_oracle() -> None:
    """||mean of n draws - t||^2 overestimates ||mu - t||^2 by tr(Sigma) / n; subtracting the
    sample estimate of that removes the bias (averaged over many draws)."""
    gen = torch.Generator().manual_seed(0)
    dim, n, trials = 8, 13, 4000
    mu, target = torch.randn(dim, generator=gen, dtype=torch.float64), torch.zeros(dim).double()
    scale = torch.linspace(0.5, 3.0, dim, dtype=torch.float64)  # Sigma = diag(scale^2)
    truth = float(((mu - target) ** 2).sum())
    raw, debiased = [], []
    for _ in range(trials):
        x = mu + scale * torch.randn(n, dim, generator=gen, dtype=torch.float64)
        mean = x.mean(0)
        noise = x.var(0, unbiased=True).sum() / n
        raw.append(float(((mean - target) ** 2).sum()))
        debiased.append(float(debiased_sq_distance(mean, noise, target)))
    bias = float((scale**2).sum()) / n
    stderr = torch.tensor(debiased).std().item() / trials**0.5
    assert abs(sum(debiased) / trials - truth) < 4 * stderr
    assert sum(raw) / trials - truth == pytest.approx(bias, rel=0.1)


def test_allocation_stats_count_the_images_of_each_class_rare_group() -> None:
    """alloc/rare_images: per class, the images owned by the group holding most altered
    images (class 0: group 1; class 1: group 2), averaged over the classes."""
    from types import SimpleNamespace

    from rdd.robust.ownership import SHARED, AllocationSettings, Ownership, allocation_stats

    own = Ownership(2, 4, AllocationSettings())
    own.assign(0, torch.tensor([0, 1, SHARED]), torch.tensor([0, 1, 3]))
    own.assign(1, torch.tensor([2, 3]), torch.tensor([2, 2]))
    own.represented[[1, 2]] = True  # class 0 keeps two rare starts among its shared images
    pool = SimpleNamespace(
        groups=torch.tensor([0, 0, 1, 1, 2, 2, 3]),
        labels=torch.tensor([0, 0, 0, 0, 1, 1, 1]),
        altered=torch.tensor([0, 1, 1, 1, 1, 0, 0], dtype=torch.bool),
        class_groups=lambda c: torch.tensor([2 * c, 2 * c + 1]),
    )
    stats = allocation_stats(SimpleNamespace(ownership=own, pool=pool), moved=3)
    assert stats == {
        "alloc/moved": 3.0,
        "alloc/rare_images": (1 + 2) / 2,
        "alloc/shared_images": 3 / 2,  # class 0 shares 3 images, class 1 none
        "alloc/represented_images": 2 / 2,
    }
    pool.altered = None  # no known subgroup: the moves and the shared images
    stats = allocation_stats(SimpleNamespace(ownership=own, pool=pool), 0)
    assert stats == {
        "alloc/moved": 0.0,
        "alloc/shared_images": 1.5,
        "alloc/represented_images": 1.0,
    }


# -- shared images: a group owns images only where the risk favours it ---------------------
FIVE = torch.tensor([0.3, 0.25, 0.2, 0.2, 0.05])  # a class split by k-means, one rare cluster


def test_with_shared_images_the_mean_keeps_the_base_method() -> None:
    """The mean weighs every group by its mass, as the class-wide target does: every image
    stays shared, whatever the measured losses."""
    for masses in (RARE, FIVE):
        assert shared_allocation(CVaR(0.0), masses, 10).tolist()[-1] == 10
    hard_rare = shared_allocation(CVaR(0.0), RARE, 10, 0, MEASURED, torch.tensor([9.5, 0.5]))
    assert hard_rare.tolist() == [0, 0, 10]


def test_with_shared_images_only_the_favoured_groups_own_any() -> None:
    """CVaR 0.5 over a 95/5 class: the rare group buys one image, the majority owns none;
    over five clusters the majority's four are never split off the shared pool."""
    assert shared_allocation(CVaR(0.5), RARE, 10).tolist() == [0, 1, 9]
    for risk in (CVaR(0.9), MaxGroup(), TwoLevel(lam=1.0)):
        slots = shared_allocation(risk, FIVE, 10)
        assert slots[:4].tolist() == [0, 0, 0, 0] and int(slots[4]) >= 1, risk
        assert int(slots.sum()) == 10


def test_with_shared_images_a_group_of_an_image_or_more_never_owns_any() -> None:
    """CVaR's tail at alpha 0.5 holds half the class's mass, so it favours large clusters
    too; a cluster the shared images give at least one image's worth (mass x 10 >= 1) stays
    shared however high its loss, and the rare one still buys."""
    measured = torch.tensor([1.0, 2.0, 1.0, 1.0, 3.0])  # a hard 25 % cluster, a harder 5 % one
    anchors = FIVE * 10
    slots = shared_allocation(CVaR(0.5), FIVE, 10, 0, measured, anchors)
    assert slots[:4].tolist() == [0, 0, 0, 0] and int(slots[4]) >= 1
    assert rare_groups(FIVE, 10).tolist() == [False, False, False, False, True]
    assert rare_groups(FIVE, 30).tolist() == [False] * 5  # 1.5 images' worth at IPC 30


def test_with_shared_images_max_group_equalises_the_effective_counts() -> None:
    """Unit losses: the worst group buys images until one more or one fewer would leave a
    larger worst loss (owned + mass x shared is its effective count)."""
    slots = shared_allocation(MaxGroup(), RARE, 10)
    assert slots.tolist() == [0, 5, 5]

    def worst(split):
        eff = effective_counts(split, RARE)
        return float(modelled_losses(torch.ones(2), torch.zeros(2), eff, 0.5).max())

    for shift in (-1, 1):
        assert worst(slots + torch.tensor([0, shift, -shift])) > worst(slots)


def test_with_shared_images_a_harder_group_buys_more() -> None:
    """The higher a group's measured loss, the more images CVaR and max-group give it."""
    anchors = torch.tensor([9.5, 0.5])
    for risk in (CVaR(0.5), MaxGroup()):
        counts = [
            int(shared_allocation(risk, RARE, 10, 0, torch.tensor([1.0, ratio]), anchors)[1])
            for ratio in (1.2, 2.0, 3.0)
        ]
        assert counts == sorted(counts) and counts[-1] > counts[0], (risk, counts)


@pytest.mark.parametrize(
    "risk", [MaxGroup(), Entropic(2.0), CVaR(0.5), CVaR(0.9), TwoLevel(lam=1.0)]
)
def test_the_shared_allocation_reaches_the_best_risk_of_its_favoured_groups(risk) -> None:
    """Against brute force over every split between the rare favoured groups and the shared
    pool (the others at the minimum, 0), on random classes of a majority and two groups
    under one image's worth (1/8 of the class)."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        small = 0.01 + 0.11 * torch.rand(2, generator=gen, dtype=torch.float64)
        masses = torch.cat([1 - small.sum().reshape(1), small])
        measured = 1 + 2 * torch.rand(3, generator=gen, dtype=torch.float64)
        anchors = 4 * torch.rand(3, generator=gen, dtype=torch.float64)
        slots = shared_allocation(risk, masses, 8, 0, measured, anchors)

        def modelled(split, measured=measured, anchors=anchors, masses=masses):
            return modelled_losses(measured, anchors, effective_counts(split, masses), 0.5)

        favoured = favoured_groups(risk, modelled(torch.tensor([0, 0, 0, 8])), masses)
        favoured &= rare_groups(masses, 8)
        assert int(slots.sum()) == 8 and not bool((slots[:3][~favoured] > 0).any())
        best = min(
            risk_value(risk, modelled(torch.tensor([*counts, 8 - sum(counts)])), masses)
            for counts in itertools.product(range(9), repeat=3)
            if sum(counts) <= 8
            and all(f or not n for n, f in zip(counts, favoured.tolist(), strict=True))
        )
        assert risk_value(risk, modelled(slots), masses) == pytest.approx(best, rel=1e-9)
