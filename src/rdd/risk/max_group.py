"""Worst-group risk: the largest group mean, hard or smoothed by online group DRO."""

from __future__ import annotations

from typing import Any

import torch

from rdd.risk.base import GroupRisk, mean_scale


def _restrict(q: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(G,) q with empty groups zeroed, renormalised over the non-empty ones."""
    q = q * present
    return q / q.sum().clamp_min(torch.finfo(q.dtype).tiny)


class MaxGroup(GroupRisk):
    """The largest non-empty group mean, or its online smoothing (Sagawa et al., 2020).

    With `smooth=True` a buffer q (G,) starts uniform on the first call and each training
    call (module in train mode, the default) updates it by exponentiated gradient ascent,
    q_g <- q_g exp(eta * mean_g / s) for the non-empty groups, then renormalises; s is the
    mass-weighted mean of the group means, so eta does not depend on the scale of the losses
    (Sagawa et al. step on cross-entropies, whose mean is ~1). The returned
    value is sum_g q_g mean_g with q restricted to the non-empty groups and renormalised there,
    so that empty groups get zero weight and a constant loss c has risk c (when no group is
    empty this is Sagawa et al.'s update on losses in units of their mean). In eval mode q is
    read, not updated. One module holds the q of one grouping: :class:`rdd.robust.plan.RiskSlots`
    keeps one per (target, class) and starts them afresh when the clustering is refitted.

    Args:
        smooth: use the online weights q instead of the hard max.
        eta: step size of the q update relative to the mean loss, > 0 (only used when smooth).
        name: config name, kept for logging.
    """

    q: torch.Tensor

    def __init__(
        self,
        smooth: bool = False,
        eta: float = 0.1,
        name: str = "max_group",
    ) -> None:
        super().__init__(name)
        if not eta > 0:
            raise ValueError(
                f"MaxGroup eta must be > 0, got {eta}: it is the step size of the online "
                "group weights (group DRO uses 0.01)"
            )
        self.smooth = bool(smooth)
        self.eta = float(eta)
        # Empty until the first call tells the number of groups.
        self.register_buffer("q", torch.empty(0))

    def weights(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """Args: means (G,), masses (G,). Returns: (G,) weights, 0 on empty groups.

        Hard: one-hot on the largest non-empty mean. Smooth: the q the next training call
        would use (this call does not change q).
        """
        present = masses > 0
        if not bool(present.any()):
            return torch.zeros_like(means)
        if self.smooth:
            return _restrict(self._stepped_q(means, masses), present)
        worst = torch.where(present, means, torch.full_like(means, -torch.inf)).argmax()
        return torch.nn.functional.one_hot(worst, means.numel()).to(means.dtype)

    def _stepped_q(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        """(G,) q after one exponentiated-gradient step on the non-empty groups."""
        present = masses > 0
        groups = means.numel()
        if self.q.numel() == 0:
            q = torch.full_like(means, 1.0 / groups)
        elif self.q.numel() != groups:
            raise ValueError(
                f"MaxGroup(smooth=True) was first called with {self.q.numel()} groups, now "
                f"with {groups}: use one module per grouping"
            )
        else:
            q = self.q.to(means)
        relative = means / mean_scale(means, masses)
        # In log space: the same update as q * exp(eta * mean), renormalised, without overflow.
        return torch.softmax(q.log() + self.eta * relative * present, 0)

    def _respond(self, means: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
        present = masses > 0
        if not (self.smooth and self.training and bool(present.any())):
            return self.weights(means, masses)
        self.q = self._stepped_q(means, masses)
        return _restrict(self.q, present)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # q's size is only known after the first call: size ours like the checkpoint's.
        saved = state_dict.get(prefix + "q")
        if saved is not None and saved.shape != self.q.shape:
            self.q = torch.empty_like(saved, device=self.q.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, eta={self.eta}"
