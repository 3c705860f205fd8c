"""Gradient spikes of an unrolled student, cut down to a multiple of their running mean.

MTT differentiates through ``syn_steps`` student steps. Near a step size where the unroll
becomes unstable, one iteration's gradient can be hundreds of times the usual one: in
benchmarks/subgroup_shift (MTT, grayscale, `rare_vs_rest`, seed 3) iteration 53 had an image
gradient 100x and a step-size gradient 60x the iterations before it. With SGD and momentum
that single step drove the learned step size from 0.017 to its floor in three iterations and
moved the images far from where matching had put them: the set lost 9 clean points.

The guard keeps, for every learned tensor, the running mean of its gradient norm (an
exponential average of the norms it let through) and scales a gradient whose norm exceeds
``limit`` times that mean down to it. It acts on the gradient after DDP's reduction (the
same on every rank), before the optimiser; a gradient within the limit is left untouched
bit for bit. The first step of a run only sets the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Weight of the past in the running mean: ~10 iterations of memory, so a slow drift of the
# gradients' scale (MTT's step size grows over a run) moves the bound with it.
DECAY = 0.9


class SpikeGuard:
    """Scale down gradients above ``limit`` times their running mean norm (per tensor).

    Everything stays on the gradients' device (no host synchronisation): a gradient within
    the bound is multiplied by exactly 1, which leaves it bit for bit as it was.

    Args:
        limit: The multiple of the running mean norm a gradient may reach; None: off.
    """

    def __init__(self, limit: float | None) -> None:
        if limit is not None and not limit > 1:
            raise ValueError(f"a spike limit must be > 1 (or None: off), got {limit}")
        self.limit = limit
        self.means: torch.Tensor | None = None  # (T,) running mean norm of each gradient
        self.cut: torch.Tensor | None = None  # (T,) how often each gradient was scaled down

    def __call__(self, params: Sequence[torch.Tensor]) -> None:
        """Scale the spiking gradients of ``params`` in place."""
        if self.limit is None:
            return
        grads = [p.grad for p in params]
        zero = torch.zeros((), device=params[0].device)
        norms = torch.stack([zero if g is None else g.detach().norm().float() for g in grads])
        if self.means is None or self.means.shape != norms.shape:
            self.means, self.cut = norms, torch.zeros_like(norms)
            return
        self.means, self.cut = self.means.to(norms.device), self.cut.to(norms.device)
        bound = self.limit * self.means
        spike = (norms > bound) & (bound > 0)
        scale = torch.where(spike, bound / norms, torch.ones_like(norms))
        for grad, factor in zip(grads, scale, strict=True):
            if grad is not None:  # no gradient: nothing to cut (its norm counts as 0)
                grad.mul_(factor.to(grad.dtype))
        self.means = DECAY * self.means + (1 - DECAY) * torch.where(spike, bound, norms)
        self.cut = self.cut + spike

    def state_dict(self) -> dict:
        """The running means and counts, on the CPU (None before the first step)."""
        if self.means is None:
            return {"means": None, "cut": None}
        return {"means": self.means.detach().cpu().clone(), "cut": self.cut.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.means, self.cut = state.get("means"), state.get("cut")
