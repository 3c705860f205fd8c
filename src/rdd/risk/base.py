"""What every group risk shares: group means from sums and counts, and best-response weights.

A risk acts on the distribution over groups in which group g has probability mass
counts[g] / sum(counts) and value mean_g = sums[g] / counts[g]. Working from sums and counts
(rather than per-sample losses) keeps the risk exact under DDP: callers all-reduce both first.
"""

from __future__ import annotations

import torch
from torch import nn


def group_means(group_sums: torch.Tensor, group_counts: torch.Tensor) -> torch.Tensor:
    """Mean loss of each group; empty groups get 0 and a zero (never NaN) gradient.

    Args:
        group_sums: (G,) summed losses per group (differentiable).
        group_counts: (G,) samples per group, int or float, 0 for an empty group.

    Returns:
        (G,) group means, in the dtype of `group_sums`.
    """
    present = group_counts > 0
    # Divide by 1 where a group is empty: dividing by 0 would put NaN into the backward pass
    # even though torch.where discards the forward value.
    safe = torch.where(present, group_counts, torch.ones_like(group_counts))
    means = group_sums / safe.to(group_sums.dtype)
    return torch.where(present, means, torch.zeros_like(means))


def mean_scale(means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """The magnitude of the mass-weighted mean of the group means (detached), floored at the
    smallest normal float (a scale: positive, so the risks still lean to the larger losses): risks whose parameter would otherwise depend on the loss scale (entropic beta,
    group-DRO eta) act on ``means / mean_scale``, so that cross-entropies (~2) and DC gradient
    distances (~100s) are treated alike.
    """
    scale = (means.detach() * masses.detach()).sum().abs()
    return scale.clamp_min(torch.finfo(means.dtype).tiny)


def group_masses(group_counts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Probability mass of each group: counts / total (all zeros when every group is empty).

    Args:
        group_counts: (G,) samples per group.
        dtype: floating dtype of the result.

    Returns:
        (G,) non-negative masses summing to 1 (or all 0).
    """
    counts = group_counts.detach().to(dtype).clamp_min(0)
    return counts / counts.sum().clamp_min(torch.finfo(dtype).tiny)


class GroupRisk(nn.Module):
    """A risk measure over groups, evaluated as a best response: sum_g w_g * mean_g.

    Subclasses implement `weights`, computed without gradient from the detached means; by
    Danskin's theorem the gradient of the returned value is then the gradient of the risk.

    A risk is a pure measure: where it acts (``robust.targets``) is decided in :mod:`rdd.robust.plan`.

    Args:
        name: config name, kept for logging.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def weights(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """Best-response weights over groups.

        Args:
            means: (G,) detached group means (0 for empty groups).
            masses: (G,) group probability masses (0 for empty groups), summing to 1 or all 0.

        Returns:
            (G,) non-negative weights, 0 on empty groups, summing to 1 (all 0 if every group
            is empty).
        """
        raise NotImplementedError

    def group_weights(self, group_sums: torch.Tensor, group_counts: torch.Tensor) -> torch.Tensor:
        """The (G,) weights `forward` would put on each group's mean, e.g. for logging."""
        with torch.no_grad():
            means = group_means(group_sums.detach(), group_counts)
            return self.weights(means, group_masses(group_counts, means.dtype))

    def forward(
        self,
        group_sums: torch.Tensor,
        group_counts: torch.Tensor,
        sample_losses: torch.Tensor | None = None,
        sample_groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Evaluate the risk.

        Args:
            group_sums: (G,) summed losses per group (differentiable).
            group_counts: (G,) samples per group; 0 marks an empty group.
            sample_losses: (N,) per-sample losses; unused here (see TwoLevel).
            sample_groups: (N,) group of each sample; unused here.

        Returns:
            Scalar sum_g w_g * mean_g, whose gradient w.r.t. group_sums[g] is
            w_g / group_counts[g] (0 for an empty group).
        """
        means = group_means(group_sums, group_counts)
        with torch.no_grad():
            w = self._respond(means.detach(), group_masses(group_counts, means.dtype))
        return (w * means).sum()

    def _respond(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """The weights of one training step; stateful risks also update their state here."""
        return self.weights(means, masses)
