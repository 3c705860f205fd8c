"""How many synthetic images each subgroup owns: the allocation that minimises the risk.

With a robust risk every synthetic image of a class belongs to one subgroup of that class
(:mod:`rdd.robust.ownership`). The risk measure does not reweight a class-wide matching target (that
only moves every image towards a weighted barycentre of the groups, see DESIGN.md); it decides
the budget. Group g owning n images is expected to have the loss

    loss_g(n) = L_g * ((c_g + 1) / (n + 1)) ** exponent

where L_g is the group's measured loss (e.g. the real-data cross-entropy, on that group, of a
network trained on the current synthetic set) while it owns c_g images: a power law in the
image count, anchored at the measurement. Before anything is measured every L_g is 1 and every
c_g is 0, so the rule depends on the group masses alone. The allocation is then greedy, one
image at a time, starting from ``minimum`` images per group: the next image goes to the group
whose extra image lowers the risk of the groups' losses the most, ties broken by the lower
mean loss (so max-group, which only looks at the worst group, never starves the others). What
follows from the rule:

* the mean (``risk=none`` never gets here; ``cvar`` with alpha 0) gives a near-proportional
  split: a group's marginal value is its mass times its loss decrease;
* ``max_group`` gives the next image to the worst group, so it equalises the groups' losses;
* ``cvar`` weighs only the groups in the upper tail of mass 1 - alpha, ``entropic`` tilts
  towards the worse groups by beta: both sit between the mean and the max.

**Shared images** (:func:`shared_allocation`, ``robust.allocation.shared``, the default): an
image may also stay *shared*, matched against the whole class as the base method matches it.
The class-wide target is the mass-weighted mixture of the groups, so a shared image serves
group g in proportion to its mass: g's effective count is n_g + m_g * S (S shared images),
and the loss model above applies to it. A group may own images only where both hold:

* it is *rare*: the shared images give it less than one image's worth (m_g * total < 1, a
  group under 10 % of its class at IPC 10). A larger group is represented in the class-wide
  set already, and matching it apart only fragments the class: in benchmarks/subgroup_shift,
  CVaR's tail (half the class's mass) let the majority's k-means clusters buy images of their
  own, which cost 2-3 clean points and lifted no group;
  ``robust.allocation.rare_below`` moves the bound (1.5 also takes a 10-15 % group, a rare
  cluster mixed with majority images: an option, benchmarks/subgroup_shift section 18);
* the risk *favours* it: its risk weight at the start (every image shared) exceeds its mass
  (CVaR's tail, max-group's worst group, entropic's above-mean groups).

Those groups buy images from the shared pool one at a time while a move lowers the (risk,
mean loss) pair. So the mean keeps every image shared (the base method's target), and the
clean cost is the images the rare groups buy.

Everything here is a pure function of tensors (tested on hand-made loss curves).
"""

from __future__ import annotations

import torch
from torch import nn

from rdd.risk.base import GroupRisk
from rdd.risk.two_level import TwoLevel

# The power law's exponent: the loss of a group falls by ~30 % when its images double
# (2 ** -0.5 = 0.71); the learning curves of few-image training sets lie around this.
DEFAULT_EXPONENT = 0.5


def modelled_losses(
    measured: torch.Tensor, anchors: torch.Tensor, counts: torch.Tensor, exponent: float
) -> torch.Tensor:
    """loss_g(counts_g) under the power law anchored at (anchors_g, measured_g): (G,)."""
    ratio = (anchors.double() + 1) / (counts.double() + 1)
    return measured.double() * ratio**exponent


def risk_value(risk: nn.Module, losses: torch.Tensor, masses: torch.Tensor) -> float:
    """The risk of group losses with the given masses, without touching the risk's state.

    A :class:`GroupRisk` is evaluated as its best response, sum_g w_g loss_g (exact for the
    mean, CVaR and the max; the tilted mean for the entropic risk). ``two_level`` has no
    per-group form: between groups it is (mean + lam * max) / (1 + lam).
    """
    with torch.no_grad():
        if isinstance(risk, GroupRisk):
            weights = risk.weights(losses, masses)
            return float((weights * losses).sum())
        if isinstance(risk, TwoLevel):
            present = losses[masses > 0]
            return float((present.mean() + risk.lam * present.max()) / (1 + risk.lam))
        return float((masses * losses).sum())  # the mean


def risk_and_mean(
    risk: nn.Module, losses: torch.Tensor, masses: torch.Tensor
) -> tuple[float, float]:
    """What every search minimises, compared in order: the risk, then the mean loss (the
    tie-break that keeps max-group from starving the other groups)."""
    return risk_value(risk, losses, masses), float((masses * losses).sum())


def checked_inputs(
    masses: torch.Tensor,
    total: int,
    minimum: int,
    measured: torch.Tensor | None,
    anchors: torch.Tensor | None,
    exponent: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The allocations' inputs in float64: masses summing to 1, measured losses (None: all
    1) and anchors (None: all 0); a ValueError for a budget below the minimum or a bad
    exponent."""
    groups = len(masses)
    if total < minimum * groups:
        raise ValueError(f"{total} images cannot give {groups} groups {minimum} each")
    if not exponent > 0:
        raise ValueError(f"the allocation exponent must be > 0, got {exponent}")
    masses = masses.double() / masses.double().sum()
    measured = torch.ones(groups, dtype=torch.float64) if measured is None else measured.double()
    anchors = torch.zeros(groups, dtype=torch.float64) if anchors is None else anchors.double()
    return masses, measured, anchors


def greedy_allocation(
    risk: nn.Module,
    masses: torch.Tensor,
    total: int,
    minimum: int = 1,
    measured: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
    exponent: float = DEFAULT_EXPONENT,
) -> torch.Tensor:
    """Images per group (G,) int64 summing to ``total``: the greedy minimiser of the risk.

    Args:
        risk: the run's risk measure (only read).
        masses: (G,) the groups' shares of the class's real images (summing to 1).
        total: the images to give out (the class's IPC).
        minimum: images every group owns at least.
        measured: (G,) measured losses L_g; None: all 1 (nothing measured yet).
        anchors: (G,) image counts at which ``measured`` was taken; None: all 0.
        exponent: the power law's exponent (> 0).

    Raises:
        ValueError: fewer images than ``minimum`` times the groups, or a bad exponent.
    """
    groups = len(masses)
    masses, measured, anchors = checked_inputs(masses, total, minimum, measured, anchors, exponent)
    counts = torch.full((groups,), minimum, dtype=torch.int64)
    for _ in range(total - int(counts.sum())):
        counts[best_group(risk, masses, counts, measured, anchors, exponent)] += 1
    return improved_by_moves(risk, masses, counts, minimum, measured, anchors, exponent)


def improved_by_moves(
    risk: nn.Module,
    masses: torch.Tensor,
    counts: torch.Tensor,
    minimum: int,
    measured: torch.Tensor,
    anchors: torch.Tensor,
    exponent: float,
) -> torch.Tensor:
    """Move single images between groups while a move lowers the (risk, mean) pair.

    Greedy one-at-a-time is exact for the mean and the max (separable, convex losses) but
    not for CVaR, whose tail changes as images move; a few moves repair that.
    """

    def key(c: torch.Tensor) -> tuple[float, float]:
        return risk_and_mean(risk, modelled_losses(measured, anchors, c, exponent), masses)

    return local_search(counts, torch.full_like(counts, minimum), key)


def favoured_groups(risk: nn.Module, losses: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """(G,) bool: the groups the risk weighs above their mass at these losses (the max's
    group for ``two_level``; none for the mean)."""
    masses = masses.double()
    with torch.no_grad():
        if isinstance(risk, GroupRisk):
            return risk.weights(losses, masses).double() > masses * (1 + 1e-9)
        if isinstance(risk, TwoLevel):
            return losses == losses[masses > 0].max()
    return torch.zeros(len(masses), dtype=torch.bool)


def rare_groups(masses: torch.Tensor, total: int, below: float = 1.0) -> torch.Tensor:
    """(G,) bool: the groups that ``total`` shared images give less than ``below`` images'
    worth (``robust.allocation.rare_below``; 1: less than one image)."""
    return masses.double() * total < below


def shared_allocation(
    risk: nn.Module,
    masses: torch.Tensor,
    total: int,
    minimum: int = 0,
    measured: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
    exponent: float = DEFAULT_EXPONENT,
    rare_below: float = 1.0,
) -> torch.Tensor:
    """Images each group owns, and the shared ones last: (G + 1,) int64 summing to ``total``.

    Args as :func:`greedy_allocation`, except that ``anchors`` are *effective* counts (owned
    images plus the group's mass times the shared ones) at the measurement, and
    ``rare_below`` is :func:`rare_groups`' bound. The search starts
    with ``minimum`` images per group and the rest shared; the rare groups the risk favours
    there (:func:`rare_groups`, :func:`favoured_groups`) may gain images, one at a time, from
    the shared pool or from each other, while a move lowers the (risk, mean loss) pair. The
    other groups keep ``minimum``.
    """
    groups = len(masses)
    masses, measured, anchors = checked_inputs(masses, total, minimum, measured, anchors, exponent)

    def key(slots: torch.Tensor) -> tuple[float, float]:
        losses = modelled_losses(measured, anchors, effective_counts(slots, masses), exponent)
        return risk_and_mean(risk, losses, masses)

    slots = torch.full((groups + 1,), minimum, dtype=torch.int64)
    slots[groups] = total - minimum * groups
    floors = torch.full_like(slots, minimum)
    floors[groups] = 0
    start = modelled_losses(measured, anchors, effective_counts(slots, masses), exponent)
    owners = favoured_groups(risk, start, masses) & rare_groups(masses, total, rare_below)
    receivers = torch.cat([owners, torch.tensor([True])])
    return local_search(slots, floors, key, receivers)


def effective_counts(slots: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Owned images plus each group's share of the shared ones (the last slot): (G,)."""
    return slots[:-1].double() + masses.double() * float(slots[-1])


def local_search(
    counts: torch.Tensor, floors: torch.Tensor, key, receivers: torch.Tensor | None = None
) -> torch.Tensor:
    """Move single images between slots (never below a slot's floor, only to ``receivers``:
    default all) while the best move lowers ``key`` (a tuple compared in order)."""
    current = key(counts)
    while True:
        best = None
        for src in range(len(counts)):
            if counts[src] <= floors[src]:
                continue
            for dst in range(len(counts)):
                if dst == src or (receivers is not None and not receivers[dst]):
                    continue
                trial = counts.clone()
                trial[src] -= 1
                trial[dst] += 1
                trial_key = key(trial)
                if _less(trial_key, current) and (best is None or _less(trial_key, best[0])):
                    best = (trial_key, trial)
        if best is None:
            return counts
        current, counts = best


def best_group(
    risk: nn.Module,
    masses: torch.Tensor,
    counts: torch.Tensor,
    measured: torch.Tensor,
    anchors: torch.Tensor,
    exponent: float,
) -> int:
    """The group whose next image gives the lowest (risk, mean loss) pair."""
    best, best_key = 0, None
    for g in range(len(counts)):
        trial = counts.clone()
        trial[g] += 1
        key = risk_and_mean(risk, modelled_losses(measured, anchors, trial, exponent), masses)
        # A relative tolerance, so that ties in exact arithmetic stay ties after rounding.
        if best_key is None or _less(key, best_key):
            best, best_key = g, key
    return best


def _less(a: tuple[float, float], b: tuple[float, float], rel: float = 1e-12) -> bool:
    for x, y in zip(a, b, strict=True):
        if abs(x - y) > rel * max(abs(x), abs(y), 1e-300):
            return x < y
    return False
