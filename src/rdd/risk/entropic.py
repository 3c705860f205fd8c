"""Entropic risk: (1 / beta) log E[exp(beta Z)], between the mean (beta -> 0) and the max."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rdd.risk.base import GroupRisk, group_masses, group_means
from rdd.risk.mean import VALID_TARGETS


class Entropic(GroupRisk):
    """Entropic risk over groups; its gradient weights group g by the tilted distribution.

    The tilted weights p_g exp(beta m_g) / sum_h p_h exp(beta m_h) are the best response of
    the KL-penalised adversary. Unlike the other risks the returned value is the entropic
    risk itself, computed on the differentiable means: its gradient is exactly those weights.

    Args:
        beta: inverse temperature, > 0.
        name: config name, kept for logging.
        on: where the risk acts, a subset of ("networks", "matching").
    """

    def __init__(
        self, beta: float = 1.0, name: str = "entropic", on: Sequence[str] = VALID_TARGETS
    ) -> None:
        super().__init__(name, on)
        if not beta > 0:
            raise ValueError(
                f"Entropic beta must be > 0, got {beta}: small beta approaches the mean, "
                "large beta the max group loss"
            )
        self.beta = float(beta)

    def weights(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """Args: means (G,), masses (G,). Returns: (G,) tilted weights, 0 on empty groups."""
        if not bool((masses > 0).any()):
            return torch.zeros_like(means)
        return torch.softmax(masses.log() + self.beta * means, 0)  # log 0 = -inf: weight 0

    def forward(
        self,
        group_sums: torch.Tensor,
        group_counts: torch.Tensor,
        sample_losses: torch.Tensor | None = None,
        sample_groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Evaluate the entropic risk.

        Args:
            group_sums: (G,) summed losses per group (differentiable).
            group_counts: (G,) samples per group; 0 marks an empty group.
            sample_losses: unused.
            sample_groups: unused.

        Returns:
            Scalar (1 / beta) log sum_g p_g exp(beta mean_g) (0 if every group is empty).
        """
        means = group_means(group_sums, group_counts)
        masses = group_masses(group_counts, means.dtype)
        present = masses > 0
        if not bool(present.any()):
            return (means * 0).sum()  # keeps the graph; logsumexp of nothing would be -inf
        # Shift by the (detached) largest mean so nothing overflows; the shift cancels exactly.
        top = torch.where(present, means, torch.full_like(means, -torch.inf)).max().detach()
        x = self.beta * (means - top)  # <= 0 on present groups
        log_mgf = torch.logsumexp(masses.log() + x, 0)
        # For small beta, log E[exp(x)] is tiny and logsumexp's absolute rounding (~eps) would be
        # amplified by 1 / beta; log1p(E[expm1(x)]) keeps relative precision there instead.
        near_zero = (masses * torch.expm1(x)).sum()
        small = near_zero > -0.5
        # Clamp so that the branch torch.where discards has a finite gradient (no 0 * inf NaN).
        log_mgf = torch.where(small, torch.log1p(near_zero.clamp_min(-0.5)), log_mgf)
        return top + log_mgf / self.beta

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
