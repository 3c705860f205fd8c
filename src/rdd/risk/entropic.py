"""Entropic risk relative to the mean loss: (s / beta) log E[exp(beta Z / s)], s = E[Z].

The plain entropic risk (1 / beta) log E[exp(beta Z)] is not scale-free: beta = 1 is almost
the mean on cross-entropies (~2) and almost the max on DC gradient distances (~100s; measured,
0.96 of the weight on one group). Measuring Z in units of its own (detached) mean makes beta a
temperature relative to the loss scale: scaling every loss by c scales the risk by c and
leaves the weights unchanged. beta -> 0 gives the mean, large beta the max.
"""

from __future__ import annotations

import torch

from rdd.risk.base import GroupRisk, group_masses, group_means, mean_scale


class Entropic(GroupRisk):
    """Entropic risk over groups; its gradient weights group g by the tilted distribution.

    With s = sum_g p_g m_g (detached), the tilted weights p_g exp(beta m_g / s) /
    sum_h p_h exp(beta m_h / s) are the best response of the KL-penalised adversary. Unlike
    the other risks the returned value is the entropic risk itself,
    (s / beta) log sum_g p_g exp(beta m_g / s), computed on the differentiable means: with s
    held constant its gradient is exactly those weights.

    Args:
        beta: inverse temperature relative to the mean loss, > 0.
        name: config name, kept for logging.
    """

    def __init__(self, beta: float = 1.0, name: str = "entropic") -> None:
        super().__init__(name)
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
        relative = means / mean_scale(means, masses)
        return torch.softmax(masses.log() + self.beta * relative, 0)  # log 0 = -inf: weight 0

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
            Scalar (s / beta) log sum_g p_g exp(beta mean_g / s), s the mass-weighted mean of
            the group means (0 if every group is empty).
        """
        means = group_means(group_sums, group_counts)
        masses = group_masses(group_counts, means.dtype)
        scale = mean_scale(means, masses)
        return scale * self._plain(means / scale, masses)

    def _plain(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """(1 / beta) log sum_g p_g exp(beta mean_g), computed without overflow."""
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
