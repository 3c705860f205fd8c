"""The matcher contract: what the run pipeline and the learner may ask of a matching method.

Every method subclasses :class:`Matcher` (coresets subclass :class:`rdd.matching.coreset.Coreset`,
itself a Matcher). The defaults below are the common case, so a method states only where it
differs, and nothing outside asks "does this matcher have X?". The learner gives a matcher a
:class:`DistillContext` at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import nn


class DistillContext(Protocol):
    """What a matcher needs from the learner (implemented by SyntheticSetLearner)."""

    images: nn.Parameter  # (num_classes * ipc, C, H, W)
    labels: torch.Tensor  # (num_classes * ipc,)
    num_classes: int
    ipc: int
    generator: torch.Generator  # CPU generator: every random draw of the run

    robust_matching: bool  # subgroups own synthetic images (rdd.robust.ownership)
    robust_networks: bool  # train networks on real data with the risk
    num_groups: int  # subgroups of the real data (classes x groups per class)
    iteration: int  # the outer iteration being run, from 0
    syn_lr: torch.Tensor | None  # MTT's learned student step size (a scalar parameter)
    make_net: Callable[[], nn.Module]  # a fresh network on the CPU (unseeded: new_net seeds)
    device: torch.device
    show_progress: bool  # show a bar over the steps inside a slow iteration (rank 0)

    def new_net(self) -> nn.Module: ...
    def regroup(self, net: nn.Module) -> dict[str, float]: ...
    def class_groups(self, c: int) -> torch.Tensor: ...
    def risk_for(self, target: str, c: int | None = None) -> nn.Module: ...
    def sample_real(self, c: int, n: int) -> torch.Tensor: ...
    def owned_batches(self, c: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]: ...
    def sample_real_stratified(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
    def sample_real_mixed(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
    def image_step(self, loss: torch.Tensor) -> None: ...
    def summed_image_step(self, terms: Iterable[torch.Tensor]) -> torch.Tensor: ...
    def safe_point(self) -> None: ...


def backward_each(
    terms: Iterable[torch.Tensor], backward: Callable[[torch.Tensor], None]
) -> torch.Tensor:
    """Backpropagate each term of a sum as soon as it is made; the detached terms (n,).

    The gradient of a sum is the sum of its terms' gradients, so the gradients this leaves
    are those of one backward of the sum, while only one term's graph is alive at a time:
    DC/DSA/DM's loss is a sum over classes, and one backward of it kept every class's graph
    until the image step (DM, CIFAR-100 at IPC 50: ~11 GiB; benchmarks/memory/). Each class's
    loss reaches only its own images, so the per-class gradients land on disjoint rows and
    add up exactly (x + 0 = x): the same gradient bitwise as the single backward
    (tests/matching/test_class_backward.py). ``terms`` may be a generator: a term is then
    made only after the previous one's backward has freed its graph.
    """
    values = []
    for term in terms:
        backward(term)
        values.append(term.detach())
    return torch.stack(values)


class Matcher:
    """A matching method. Constructor arguments are its `matching` config keys.

    Attributes a subclass sets in its constructor: ``name``, ``iterations`` (outer
    iterations), ``init`` (how the synthetic set starts: ``real`` or ``noise``), and for
    optimising methods ``lr_img`` / ``momentum_img`` (the image optimiser).
    """

    name: str
    iterations: int = 0
    init: str = "real"
    lr_img: float
    momentum_img: float

    # A coreset picks real images (select) instead of optimising (step).
    is_coreset: ClassVar[bool] = False
    # The whole-dataset reference: evaluation trains on every real image.
    whole_dataset: ClassVar[bool] = False
    # MTT: needs expert trajectories (attach) before the first step.
    needs_experts: ClassVar[bool] = False
    # How DDP combines the ranks' image gradients: "mean" (each rank has the full gradient)
    # or "sum" (each rank holds its shard's part, MTT).
    image_grad_reduction: ClassVar[str] = "mean"
    # How a run makes this method train a network on real data (for rdd.robust.plan's errors).
    real_training_hint: ClassVar[str] = ""
    # Whether step() calls ctx.safe_point() between its image steps, where a preempted run may
    # stop mid-iteration (rdd.checkpoint.preemption; it then keeps a copy of the state at each start).
    safe_points_inside: ClassVar[bool] = False
    # Synthetic images per stored image (IDM's multi-formation); 1 elsewhere.
    factor: int = 1
    # Per-subgroup matching losses of the last step (W&B histogram); empty when not robust
    # (a method that has them sets a list of its own in every step).
    group_losses: Sequence[torch.Tensor] = ()

    def trains_on_real(self, ipc: int) -> bool:
        """Whether some network trains on real data at this IPC (the networks target)."""
        return False

    @property
    def initial_step_size(self) -> float | None:
        """The learned student step size's start (MTT); None: the method learns none."""
        return None

    def step(self, ctx: DistillContext) -> dict[str, float]:
        """One outer iteration: update ``ctx.images``; returns logged values
        (``match_loss`` at least)."""
        raise NotImplementedError(f"{type(self).__name__} does not optimise a synthetic set")

    def guard_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Adjust the learned tensors' reduced gradients before the optimiser steps (MTT
        cuts gradient spikes, rdd.matching.spikes); the others leave them as they are."""

    def state_dict(self) -> Any:
        """What a checkpoint must hold to continue the method exactly (e.g. IDM's queue)."""
        return {}

    def load_state_dict(self, state: Any, ctx: DistillContext) -> None:
        """Restore :meth:`state_dict` once the learner is on its device."""
