"""The paper's objective: CVaR inside each group, then mean plus lam times max over groups,
normalised by 1 + lam so that its weights sum to 1 like every other risk's (otherwise lam = 1
doubles the effective image learning rate against the other risks)."""

from __future__ import annotations

import torch
from torch import nn

from rdd.risk.cvar import check_alpha, cvar_weights


class TwoLevel(nn.Module):
    """(mean_g c_g + lam * max_g c_g) / (1 + lam), c_g = CVaR_alpha of group g's sample losses.

    Both the mean and the max run over the non-empty groups, unweighted by group size. The
    inner CVaR needs the per-sample losses, so this risk works on the losses the caller holds
    (under DDP, the local ones) rather than on all-reduced sums and counts.

    Args:
        alpha: inner CVaR level in [0, 1) (0.8: the worst 20% of each group).
        lam: weight of the worst group, >= 0.
        name: config name, kept for logging.
    """

    def __init__(
        self,
        alpha: float = 0.8,
        lam: float = 1.0,
        name: str = "two_level",
    ) -> None:
        super().__init__()
        self.name = name
        self.alpha = check_alpha(alpha)
        if not lam >= 0:
            raise ValueError(f"TwoLevel lam must be >= 0, got {lam}: 0 drops the max-group term")
        self.lam = float(lam)

    def sample_weights(
        self, sample_losses: torch.Tensor, sample_groups: torch.Tensor, num_groups: int
    ) -> torch.Tensor:
        """Best-response weights of the samples, computed without gradient.

        Args:
            sample_losses: (N,) per-sample losses.
            sample_groups: (N,) int group of each sample, in [0, num_groups).
            num_groups: G.

        Returns:
            (N,) non-negative weights w with sum_i w_i loss_i equal to the risk; they sum to
            1 (0 when N = 0).
        """
        with torch.no_grad():
            losses = sample_losses.detach()
            counts = torch.bincount(sample_groups, minlength=num_groups)
            w = torch.zeros_like(losses)
            inner = losses.new_zeros(num_groups)
            for g in torch.nonzero(counts).flatten().tolist():
                members = torch.nonzero(sample_groups == g).flatten()
                values = losses[members]
                w[members] = cvar_weights(values, torch.ones_like(values), self.alpha)
                inner[g] = (w[members] * values).sum()
            present = counts > 0
            if not bool(present.any()):
                return w
            outer = present.to(losses.dtype) / present.sum()
            worst = torch.where(present, inner, torch.full_like(inner, -torch.inf)).argmax()
            outer[worst] += self.lam
            return w * outer[sample_groups] / (1.0 + self.lam)

    def forward(
        self,
        group_sums: torch.Tensor,
        group_counts: torch.Tensor,
        sample_losses: torch.Tensor | None = None,
        sample_groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Evaluate the risk.

        Args:
            group_sums: (G,) summed losses per group; only its length G is used.
            group_counts: (G,) samples per group; unused (the groups come from sample_groups).
            sample_losses: (N,) per-sample losses (differentiable); required.
            sample_groups: (N,) int group of each sample in [0, G); required.

        Returns:
            Scalar risk; its gradient flows through `sample_losses` (sample i gets its weight).
        """
        if sample_losses is None or sample_groups is None:
            raise ValueError(
                "risk=two_level needs per-sample losses: call "
                "risk(group_sums, group_counts, sample_losses=(N,), sample_groups=(N,))"
            )
        num_groups = group_sums.numel()
        self._check_samples(sample_losses, sample_groups, num_groups)
        w = self.sample_weights(sample_losses, sample_groups, num_groups)
        return (w * sample_losses).sum()

    @staticmethod
    def _check_samples(losses: torch.Tensor, groups: torch.Tensor, num_groups: int) -> None:
        if losses.ndim != 1 or groups.shape != losses.shape:
            raise ValueError(
                f"sample_losses and sample_groups must both be (N,), got {tuple(losses.shape)} "
                f"and {tuple(groups.shape)}"
            )
        if groups.dtype.is_floating_point or groups.dtype == torch.bool:
            raise ValueError(f"sample_groups must be an integer tensor, got {groups.dtype}")
        if groups.numel() and not (int(groups.min()) >= 0 and int(groups.max()) < num_groups):
            raise ValueError(f"sample_groups must lie in [0, {num_groups}) (G = len(group_sums))")

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, lam={self.lam}"
