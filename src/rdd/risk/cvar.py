"""Conditional value at risk: the mean of the worst (1 - alpha) mass of the loss distribution."""

from __future__ import annotations

import torch

from rdd.risk.base import GroupRisk


def check_alpha(alpha: float) -> float:
    """Validate a CVaR level: alpha in [0, 1), the fraction of the mass that is ignored."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(
            f"CVaR alpha must lie in [0, 1), got {alpha}: alpha=0 is the mean, alpha -> 1 the "
            "max (the paper uses 0.8, i.e. the worst 20% of the mass)"
        )
    return float(alpha)


def cvar_weights(values: torch.Tensor, masses: torch.Tensor, alpha: float) -> torch.Tensor:
    """Weights w with sum_i w_i values_i = CVaR_alpha of the discrete distribution (values, masses).

    The upper tail of mass 1 - alpha is filled greedily from the largest value down; the atom
    straddling the (alpha) quantile gets only the mass that remains.

    Args:
        values: (n,) atom values (detached).
        masses: (n,) non-negative atom masses; normalised here, zero-mass atoms get weight 0.
        alpha: level in [0, 1).

    Returns:
        (n,) non-negative weights summing to 1 (all 0 when every mass is 0).
    """
    tail = 1.0 - alpha
    total = masses.sum()
    p = masses / total.clamp_min(torch.finfo(masses.dtype).tiny)
    order = torch.argsort(values, descending=True)
    p_sorted = p[order]
    before = torch.cumsum(p_sorted, 0) - p_sorted  # mass of the strictly larger atoms
    taken = torch.minimum((tail - before).clamp_min(0), p_sorted)
    w = torch.zeros_like(p)
    w[order] = taken / tail
    # Renormalise away the rounding of the cumulative sums (a no-op in exact arithmetic).
    return w / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


class CVaR(GroupRisk):
    """CVaR_alpha over groups: the mean of the largest losses carrying (1 - alpha) of the mass.

    Group g carries mass counts[g] / sum(counts), so this is the CVaR of the per-sample losses
    after replacing each loss by its group mean. alpha = 0 gives the mean, alpha -> 1 the
    largest non-empty group mean.

    Args:
        alpha: level in [0, 1).
        name: config name, kept for logging.
    """

    def __init__(self, alpha: float = 0.5, name: str = "cvar") -> None:
        super().__init__(name)
        self.alpha = check_alpha(alpha)

    def weights(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """Args: means (G,), masses (G,). Returns: (G,) upper-tail CVaR weights."""
        return cvar_weights(means, masses, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
