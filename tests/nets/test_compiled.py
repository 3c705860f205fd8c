"""``matching.compile_nets``: the compiled first-order passes give eager's numbers to float
rounding (the oracle is the eager implementation on the same inputs and weights)."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from rdd.matching.distribution import DistributionMatching
from rdd.matching.gradient import GradientMatching
from rdd.nets import ConvNet
from rdd.nets.compiled import FirstOrderPasses, first_order

CLASSES, IPC, REAL, SIZE = 3, 2, 8, 16
pytestmark = pytest.mark.slow  # each test compiles a few graphs: ~1 min on 2 CPU cores


def net() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet(3, CLASSES, (SIZE, SIZE), width=16)


def context(seed: int = 0) -> types.SimpleNamespace:
    """What the matchers read of the learner, on fixed seeded batches."""
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(CLASSES, REAL, 3, SIZE, SIZE, generator=gen)
    syn = torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=gen)
    return types.SimpleNamespace(
        images=nn.Parameter(syn),
        labels=torch.arange(CLASSES).repeat_interleave(IPC),
        num_classes=CLASSES,
        ipc=IPC,
        generator=torch.Generator().manual_seed(1),
        robust_matching=False,
        sample_real=lambda c, n: real[c, :n],
        show_progress=False,
    )


def close(ours: torch.Tensor, eager: torch.Tensor, rtol: float = 1e-4) -> bool:
    return bool((ours - eager).abs().max() <= rtol * eager.abs().max())


def test_first_order_is_the_net_itself_when_off() -> None:
    model = net()
    assert first_order(model, False) is model
    assert isinstance(first_order(model, True), FirstOrderPasses)


@pytest.mark.parametrize("dsa", [False, True])
def test_gradient_matching_compiled_equals_eager(dsa: bool) -> None:
    results = []
    for flag in (False, True):
        ctx, model = context(), net()
        matcher = GradientMatching(dsa=dsa, compile_nets=flag, batch_real=REAL)
        losses = matcher.class_losses(model, ctx)
        (grad,) = torch.autograd.grad(losses.sum(), ctx.images)
        matcher.train_net(model, matcher.net_optimizer(model), ctx, epochs=3)
        weights = nn.utils.parameters_to_vector(model.parameters()).detach()
        results.append((losses.detach(), grad, weights))
    (l0, g0, w0), (l1, g1, w1) = results
    assert close(l1, l0) and close(g1, g0) and close(w1, w0)
    assert not torch.equal(w0, nn.utils.parameters_to_vector(net().parameters()))  # it trained


def test_distribution_matching_compiled_equals_eager() -> None:
    """DM's loss and image gradient, and IDM's expanded class loss with the CE term."""
    for settings in ({}, {"factor": 2, "ce_weight": 0.5}):
        results = []
        for flag in (False, True):
            ctx, model = context(), net()
            matcher = DistributionMatching(compile_nets=flag, batch_real=REAL, **settings)
            losses = torch.stack([matcher.class_loss(model, 40.0, ctx, c) for c in range(CLASSES)])
            (grad,) = torch.autograd.grad(losses.sum(), ctx.images)
            results.append((losses.detach(), grad))
        (l0, g0), (l1, g1) = results
        assert close(l1, l0) and close(g1, g0), settings
