"""The allocation of synthetic images to subgroups, per risk, on hand-made loss curves, and the
debiased per-group distance (against a Gaussian oracle)."""

from __future__ import annotations

import itertools

import pytest
import torch

from rdd.matching.robust import debiased_sq_distance
from rdd.risk import CVaR, Entropic, MaxGroup, MeanRisk
from rdd.risk.two_level import TwoLevel
from rdd.robust.allocation import greedy_allocation, modelled_losses, risk_value

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

    from rdd.robust.ownership import AllocationSettings, Ownership, allocation_stats

    own = Ownership(2, 4, AllocationSettings())
    own.assign(0, torch.tensor([0, 1]), torch.tensor([3, 1]))
    own.assign(1, torch.tensor([2, 3]), torch.tensor([2, 2]))
    pool = SimpleNamespace(
        groups=torch.tensor([0, 0, 1, 1, 2, 2, 3]),
        labels=torch.tensor([0, 0, 0, 0, 1, 1, 1]),
        altered=torch.tensor([0, 1, 1, 1, 1, 0, 0], dtype=torch.bool),
        class_groups=lambda c: torch.tensor([2 * c, 2 * c + 1]),
    )
    stats = allocation_stats(SimpleNamespace(ownership=own, pool=pool), moved=3)
    assert stats == {"alloc/moved": 3.0, "alloc/rare_images": (1 + 2) / 2}
    pool.altered = None  # no known subgroup: only the moves
    assert allocation_stats(SimpleNamespace(ownership=own, pool=pool), 0) == {"alloc/moved": 0.0}
