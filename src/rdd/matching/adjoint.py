"""MTT's unroll with memory flat in ``syn_steps`` (``matching.memory=constant``).

The student takes N steps theta_{i+1} = theta_i - lr * g_i, with g_i = grad_theta of the mean
cross-entropy of net(theta_i) on step i's augmented mini-batch A_i(X[idx_i]). Autograd through
the unroll (``memory=full``) keeps every step's double-backward graph until the image step:
memory linear in N. Here the forward pass keeps only each step's parameters theta_i (P floats)
and what it drew from the generator (the indices idx_i and the sampled DSA transform: a few
numbers per image), and the backward pass walks the steps in reverse with the adjoint
lambda_i = dL/dtheta_i, starting from lambda_N = dL/dtheta_N (whatever the loss: the matching
distance, plus the robust term). Step i is a function s_i(theta, X, lr) = theta - lr * g_i, so
its vector-Jacobian product with lambda_{i+1} gives exactly

    lambda_i   = lambda_{i+1} - lr * H_i^T lambda_{i+1}      (H_i = dg_i/dtheta_i)
    dL/dX     += -lr * (dg_i/dX)^T lambda_{i+1}
    dL/dlr    += -g_i . lambda_{i+1}

which is the chain rule that autograd applies to the stored graph: the same gradients up to
float rounding, with no truncation. TESLA (Cui et al., ICML 2023) also recomputes each step,
but as we read it differentiates the expanded distance with every other step's g_j held
fixed, i.e. with lambda kept at dL/dtheta_N (no H_i^T lambda terms): exact only to first
order in lr. Only step i's graph (one forward and its double backward) is alive at a time;
the cost is one extra first-order gradient per step (the forward pass without create_graph).

The VJP runs through the very step function of ``memory=full``
(:meth:`TrajectoryMatching.student_step`), so DDP behaves identically: each rank recomputes
its shard, the student gradient is summed over ranks (forward) and the parameters' cotangent
too (backward); the image gradient holds this rank's shards (the learner sums it), and the
step size's gradient is the global one on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from rdd.augment import DSATransform

if TYPE_CHECKING:
    from rdd.matching.base import DistillContext

Params = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, DSATransform | None]  # a student step's indices and DSA draw


class UnrolledMatcher(Protocol):
    """What the reverse pass asks of MTT's matcher (rdd.matching.trajectory, which imports this
    module): its mini-batches, and one differentiable student step."""

    def minibatches(self, ctx: DistillContext) -> Iterator[Batch]: ...

    def batch(
        self,
        ctx: DistillContext,
        idx: torch.Tensor,
        transform: DSATransform | None,
        images: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def student_step(
        self,
        net: nn.Module,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        batch: int,
        lr,
        create_graph: bool = True,
    ) -> Params: ...


class _Unroll:
    """What the backward pass needs: the matcher, context and net, and per step the student's
    parameters before it and the mini-batch and DSA transform it used."""

    def __init__(
        self, matcher: UnrolledMatcher, ctx: DistillContext, net: nn.Module, names: list[str]
    ) -> None:
        self.matcher, self.ctx, self.net, self.names = matcher, ctx, net, names
        self.thetas: list[tuple[torch.Tensor, ...]] = []
        self.batches: list[Batch] = []

    def step(
        self,
        theta: tuple[torch.Tensor, ...],
        images: torch.Tensor,
        lr: torch.Tensor,
        batch: Batch,
        create_graph: bool,
    ) -> tuple[torch.Tensor, ...]:
        """theta - lr * g on ``batch``; ``theta`` must be leaves that require grad."""
        idx, transform = batch
        x, y = self.matcher.batch(self.ctx, idx, transform, images=images)
        params = dict(zip(self.names, theta, strict=True))
        new = self.matcher.student_step(self.net, params, x, y, len(idx), lr, create_graph)
        return tuple(new[name] for name in self.names)


class _AdjointUnroll(torch.autograd.Function):
    """(images, lr, *theta_0) -> theta_N, with the hand-written reverse pass."""

    @staticmethod
    def forward(fctx, run: _Unroll, images, lr, *begin):
        lr_value = lr.detach()
        theta = tuple(p.detach() for p in begin)
        with torch.enable_grad():  # the student's own gradients, without a graph to keep
            for batch in run.matcher.minibatches(run.ctx):
                run.thetas.append(theta)
                run.batches.append(batch)
                leaves = tuple(q.detach().requires_grad_(True) for q in theta)
                theta = run.step(leaves, images.detach(), lr_value, batch, create_graph=False)
                theta = tuple(p.detach() for p in theta)
        fctx.run = run
        fctx.save_for_backward(images, lr)
        return theta

    @staticmethod
    @once_differentiable
    def backward(fctx, *cotangents):
        run: _Unroll = fctx.run
        images, lr = fctx.saved_tensors
        lam = tuple(
            torch.zeros_like(p) if c is None else c
            for p, c in zip(run.thetas[-1], cotangents, strict=True)
        )
        x_leaf = images.detach().requires_grad_(True)
        lr_leaf = lr.detach().requires_grad_(True)
        d_images, d_lr = torch.zeros_like(images), torch.zeros_like(lr)
        for theta, batch in zip(reversed(run.thetas), reversed(run.batches), strict=True):
            with torch.enable_grad():
                leaves = tuple(p.detach().requires_grad_(True) for p in theta)
                new = run.step(leaves, x_leaf, lr_leaf, batch, create_graph=True)
                # One VJP of the step: (lambda_i, its dX share, its dlr share); step i's
                # graph is freed when it returns.
                *lam, g_x, g_lr = torch.autograd.grad(
                    new, (*leaves, x_leaf, lr_leaf), grad_outputs=lam
                )
            lam = tuple(lam)
            d_images += g_x
            d_lr += g_lr
        fctx.run = None  # drop the stored parameters with the graph
        begin_grads = lam if any(fctx.needs_input_grad[3:]) else (None,) * len(lam)
        return (None, d_images, d_lr, *begin_grads)


def adjoint_unroll(
    matcher: UnrolledMatcher, ctx: DistillContext, net: nn.Module, begin: Params
) -> Params:
    """The student's parameters after ``matcher.syn_steps`` steps from ``begin``, with the
    value and gradients (images, ``ctx.syn_lr``) of :meth:`TrajectoryMatching.unroll`.

    Raises:
        ValueError: without a learned step size tensor (``ctx.syn_lr``).
    """
    if not isinstance(ctx.syn_lr, torch.Tensor):
        raise ValueError("matching.memory=constant needs the learned step size ctx.syn_lr")
    names = list(begin)
    run = _Unroll(matcher, ctx, net, names)
    out = _AdjointUnroll.apply(run, ctx.images, ctx.syn_lr, *begin.values())
    return dict(zip(names, out, strict=True))
