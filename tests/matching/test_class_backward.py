"""A backward per class (rdd.matching.base.backward_each): DC/DSA/DM's image step gives the
image gradient and logged loss of one backward of the summed loss, bitwise, while holding one
class's graph instead of every class's."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import pytest
import torch

from rdd.matching.base import Matcher
from rdd.matching.distribution import DistributionMatching, frozen
from rdd.matching.gradient import GradientMatching
from rdd.nets import build_net
from rdd.risk import CVaR
from tests.fakes import FakeContext

CLASSES, IPC, PER_CLASS = 4, 4, 8
NET = {"_target_": "rdd.nets.convnet.ConvNet", "width": 8, "depth": 2}


def context(robust: bool) -> FakeContext:
    """Float32 (where summation order would show), four classes of eight real 8x8 images in
    two subgroups each, shuffled real batches, a fixed network seed."""
    gen = torch.Generator().manual_seed(0)
    real_y = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    return FakeContext(
        torch.randn(CLASSES * IPC, 3, 8, 8, generator=gen),
        torch.arange(CLASSES).repeat_interleave(IPC),
        torch.randn(CLASSES * PER_CLASS, 3, 8, 8, generator=gen),
        real_y,
        2 * real_y + torch.arange(len(real_y)) % 2,
        make_net=lambda: build_net(NET, 3, CLASSES, (8, 8)),
        risk=CVaR(alpha=0.5) if robust else None,
        shuffle=True,
        net_seed=3,
    )


def dc(dsa: bool = False) -> GradientMatching:
    return GradientMatching(batch_real=4, outer_loop=1, dsa=dsa)


def summed_dc(matcher: GradientMatching, ctx: FakeContext) -> torch.Tensor:
    """The oracle: every class's loss in one graph, as the step built it before."""
    return matcher.class_losses(ctx.new_net().train(), ctx)


def summed_dm(matcher: DistributionMatching, ctx: FakeContext) -> torch.Tensor:
    net = ctx.new_net().train()
    with frozen(net):
        return torch.stack([matcher.class_loss(net, 0.0, ctx, c) for c in range(CLASSES)])


CASES = {
    "dc": (dc, summed_dc),
    "dsa": (lambda: dc(dsa=True), summed_dc),
    "dm": (lambda: DistributionMatching(batch_real=4), summed_dm),
}


@pytest.mark.parametrize("robust", [False, True], ids=["risk_none", "owned_cvar"])
@pytest.mark.parametrize("method", CASES)
def test_a_backward_per_class_gives_the_summed_gradient_bitwise(method, robust) -> None:
    """The step's image gradient and logged loss against one backward of the summed loss
    from the same draws. Bitwise: each class's gradient reaches only that class's images,
    so adding them up is exact (x + 0 = x), whatever the order."""
    make, summed = CASES[method]
    ctx = context(robust)
    stats = make().step(ctx)
    want_ctx = context(robust)
    losses = summed(make(), want_ctx)
    (want,) = torch.autograd.grad(losses.sum(), want_ctx.images)
    assert torch.equal(ctx.images.grad, want)
    assert stats["match_loss"] == float(losses.detach().mean())
    assert torch.equal(ctx.losses[-1], losses.detach().sum())


class SavedBytes:
    """Peak bytes of the tensors autograd graphs hold for their backward (those graphs free
    them in backward), via saved-tensor hooks."""

    def __init__(self) -> None:
        self.live: weakref.WeakSet = weakref.WeakSet()
        self.peak = 0

    def pack(self, tensor: torch.Tensor) -> Saved:
        saved = Saved(tensor)
        self.live.add(saved)
        self.peak = max(self.peak, sum(s.nbytes for s in self.live))
        return saved

    def measure(self, work: Callable[[], object]) -> int:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda saved: saved.tensor):
            work()
        return self.peak


class Saved:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor, self.nbytes = tensor, tensor.numel() * tensor.element_size()


def summed_backward(make: Callable[[], Matcher], summed: Callable, robust: bool) -> None:
    ctx = context(robust)
    summed(make(), ctx).sum().backward()


@pytest.mark.parametrize("robust", [False, True], ids=["risk_none", "owned_cvar"])
@pytest.mark.parametrize("method", ["dc", "dm"])
def test_the_image_step_holds_one_class_graph_at_a_time(method, robust) -> None:
    """With four equal classes the summed loss holds four classes' graphs before its
    backward; the step, one class's (and what every class shares: under half)."""
    make, summed = CASES[method]
    step = SavedBytes().measure(lambda: make().step(context(robust)))
    every_class = SavedBytes().measure(lambda: summed_backward(make, summed, robust))
    assert step < every_class / 2, (step, every_class)


def test_idm_still_steps_once_per_class_on_that_class_loss() -> None:
    """IDM's step per class: CLASSES steps, each recorded with its class's own graph."""
    ctx = context(robust=False)
    DistributionMatching(batch_real=4, step_per_class=True, queue_size=2, fetch_nets=0).step(ctx)
    assert ctx.steps == CLASSES and all(loss.requires_grad for loss in ctx.losses)


def square_term(images: torch.Tensor, c: int) -> torch.Tensor:
    """Class c's term of a toy loss on the learner's 3 classes x 2 images."""
    return (images[2 * c : 2 * c + 2] ** 2).sum() * (c + 1)


class TermMatcher(Matcher):
    """One image step on the toy loss, term by term, through summed_image_step."""

    lr_img, momentum_img, iterations = 1.0, 0.0, 1
    initial_step_size = None

    def step(self, ctx) -> dict[str, float]:
        self.values = ctx.summed_image_step(square_term(ctx.images, c) for c in range(3))
        return {"match_loss": float(self.values.mean())}


def test_the_learner_steps_on_the_terms_as_on_their_sum() -> None:
    """SyntheticSetLearner.summed_image_step (term by term, inside a Trainer) moves the images
    as image_step on the summed loss does, and returns the terms."""
    from tests.matching.test_trajectory import ScriptedMatcher, tiny_learner

    start = torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    summed = ScriptedMatcher(
        [lambda ctx: torch.stack([square_term(ctx.images, c) for c in range(3)]).sum()]
    )
    summed.initial_step_size = None  # no learned step size: the images' step only
    by_term = TermMatcher()
    results = []
    for matcher in (summed, by_term):
        learner, trainer = tiny_learner(matcher, start.clone())
        trainer.fit(learner)
        results.append(learner.images.detach())
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], start)
    assert torch.equal(by_term.values, torch.stack([square_term(start, c) for c in range(3)]))
