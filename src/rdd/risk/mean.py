"""The plain mean: the risk of the base methods (`risk=none`)."""

from __future__ import annotations

import torch
from torch import nn


class MeanRisk(nn.Module):
    """Mean loss over all samples, whatever the groups: sum of group sums / total count.

    Args:
        name: config name, kept for logging.
    """

    def __init__(self, name: str = "none") -> None:
        super().__init__()
        self.name = name

    def forward(
        self,
        group_sums: torch.Tensor,
        group_counts: torch.Tensor,
        sample_losses: torch.Tensor | None = None,
        sample_groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args: group_sums (G,) summed losses per group; group_counts (G,) samples per group;
        sample_losses, sample_groups: accepted like every risk's, unused.

        Returns: scalar mean loss; empty groups contribute nothing.
        """
        return group_sums.sum() / group_counts.sum().clamp_min(1)
