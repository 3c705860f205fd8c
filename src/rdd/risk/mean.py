"""The plain mean: the risk of the base methods (`risk=none`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

VALID_TARGETS = ("networks", "matching")


def check_targets(on: Sequence[str]) -> tuple[str, ...]:
    """Validate `risk.on`: where the risk acts."""
    unknown = [t for t in on if t not in VALID_TARGETS]
    if unknown:
        raise ValueError(
            f"risk.on has unknown entries {unknown}: use a subset of {list(VALID_TARGETS)}"
        )
    return tuple(on)


class MeanRisk(nn.Module):
    """Mean loss over all samples, whatever the groups: sum of group sums / total count.

    Args:
        name: config name, kept for logging.
        on: where a robust risk would act; the mean is the same everywhere.
    """

    def __init__(self, name: str = "none", on: Sequence[str] = VALID_TARGETS) -> None:
        super().__init__()
        self.name = name
        self.on = check_targets(on)

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
