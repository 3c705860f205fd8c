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
    if total < minimum * groups:
        raise ValueError(f"{total} images cannot give {groups} groups {minimum} each")
    if not exponent > 0:
        raise ValueError(f"the allocation exponent must be > 0, got {exponent}")
    masses = masses.double() / masses.double().sum()
    measured = torch.ones(groups, dtype=torch.float64) if measured is None else measured.double()
    anchors = torch.zeros(groups, dtype=torch.float64) if anchors is None else anchors.double()
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
        losses = modelled_losses(measured, anchors, c, exponent)
        return risk_value(risk, losses, masses), float((masses * losses).sum())

    current = key(counts)
    while True:
        moves = [
            (src, dst)
            for src in range(len(counts))
            for dst in range(len(counts))
            if src != dst and counts[src] > minimum
        ]
        best = None
        for src, dst in moves:
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
        losses = modelled_losses(measured, anchors, trial, exponent)
        key = (risk_value(risk, losses, masses), float((masses * losses).sum()))
        # A relative tolerance, so that ties in exact arithmetic stay ties after rounding.
        if best_key is None or _less(key, best_key):
            best, best_key = g, key
    return best


def _less(a: tuple[float, float], b: tuple[float, float], rel: float = 1e-12) -> bool:
    for x, y in zip(a, b, strict=True):
        if abs(x - y) > rel * max(abs(x), abs(y), 1e-300):
            return x < y
    return False
