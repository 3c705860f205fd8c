"""Gradient matching (DC/DSA) and coreset baselines against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rdd.config.compose import CONF_DIR, build
from rdd.matching import Matcher
from rdd.matching.coreset import HerdingCoreset, KCenterCoreset, RandomCoreset
from rdd.matching.distance import cosine_distance, layerwise_distance, mse_distance
from rdd.matching.gradient import PUBLISHED_LOOPS, GradientMatching, loops_for_ipc
from rdd.nets import build_net
from tests.conftest import compose_config
from tests.fakes import FakeContext


def numpy_layerwise(g_syn, g_real) -> float:
    """Independent oracle: loop over weight tensors and output rows in NumPy."""
    total = 0.0
    for gs, gr in zip(g_syn, g_real, strict=True):
        gs, gr = gs.detach().numpy(), gr.detach().numpy()
        if gs.ndim < 2:
            continue
        for row_s, row_r in zip(
            gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1), strict=True
        ):
            total += 1 - row_s @ row_r / (np.linalg.norm(row_s) * np.linalg.norm(row_r) + 1e-6)
    return total


def test_layerwise_distance_equals_a_hand_computation() -> None:
    g_syn = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([5.0, 5.0])]
    g_real = [torch.tensor([[1.0, 1.0], [0.0, -3.0]]), torch.tensor([1.0, -1.0])]
    # row 0: cos = 1/sqrt(2); row 1: cos = -1; the bias (1-D) is ignored.
    expected = (1 - 1 / np.sqrt(2)) + 2
    assert float(layerwise_distance(g_syn, g_real)) == pytest.approx(expected, abs=1e-5)


def test_layerwise_distance_matches_numpy_on_conv_shapes() -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (4, 8, 3, 3), (10, 16)]
    g_syn = [torch.randn(s, generator=gen) for s in shapes]
    g_real = [torch.randn(s, generator=gen) for s in shapes]
    assert float(layerwise_distance(g_syn, g_real)) == pytest.approx(
        numpy_layerwise(g_syn, g_real), rel=1e-5
    )


def test_mse_and_cosine_distances() -> None:
    a, b = (
        [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])],
        [torch.tensor([0.0, 2.0]), torch.tensor([[3.0]])],
    )
    assert float(mse_distance(a, b)) == pytest.approx(1 + 9)
    assert float(cosine_distance(a, b)) == pytest.approx(
        1 - 4 / (np.sqrt(5) * np.sqrt(13)), abs=1e-5
    )


def test_published_loop_table_and_the_rule_between_entries() -> None:
    for ipc, loops in PUBLISHED_LOOPS.items():
        assert loops_for_ipc(ipc) == loops
    assert loops_for_ipc(15) == (15, round(50 + 0.5 * (25 - 50)))
    assert loops_for_ipc(2)[0] == 2
    assert loops_for_ipc(100) == (50, 10)
    with pytest.raises(ValueError):
        loops_for_ipc(0)
    assert GradientMatching(outer_loop=3, inner_loop=0).loops(10) == (3, 0)


def matching_context(num_classes=3, ipc=2, size=8, bn=False) -> FakeContext:
    """Three classes of 20 random real images, random batches, a small ConvNet seeded 0, and
    image steps of plain SGD (lr 0.1)."""
    gen = torch.Generator().manual_seed(0)
    real_x = torch.randn(num_classes * 20, 1, size, size, generator=gen)
    images = torch.randn(num_classes * ipc, 1, size, size, generator=gen)
    cfg = {"_target_": "rdd.nets.convnet.ConvNet", "width": 8}
    cfg["norm"] = "batchnorm" if bn else "instancenorm"
    return FakeContext(
        images,
        torch.arange(num_classes).repeat_interleave(ipc),
        real_x,
        torch.arange(num_classes).repeat_interleave(20),
        make_net=lambda: build_net(cfg, 1, num_classes, (size, size)),
        net_seed=0,
        shuffle=True,
        step_lr=0.1,
    )


@pytest.mark.parametrize("dsa", [False, True])
def test_gradients_reach_every_synthetic_image(dsa: bool) -> None:
    ctx = matching_context()
    matcher = GradientMatching(dsa=dsa, dsa_strategy="color_crop_cutout_scale_rotate")
    losses = matcher.class_losses(ctx.new_net(), ctx)
    assert losses.shape == (3,) and torch.all(losses > 0)
    losses.sum().backward()
    per_image = ctx.images.grad.flatten(1).norm(dim=1)
    assert torch.all(per_image > 0)


def test_class_loss_is_the_distance_of_real_and_synthetic_gradients() -> None:
    ctx = matching_context()
    net = ctx.new_net()
    params = list(net.parameters())
    real, syn = ctx.sample_real(1, 20), ctx.images[2:4]
    ce = nn.CrossEntropyLoss()
    target = lambda n: torch.full((n,), 1)  # noqa: E731
    g_real = torch.autograd.grad(ce(net(real), target(20)), params)
    g_syn = torch.autograd.grad(ce(net(syn), target(2)), params)
    got = GradientMatching().match(net, params, real, syn, 1)
    assert got.detach().item() == pytest.approx(numpy_layerwise(g_syn, g_real), rel=1e-5)


def test_an_outer_iteration_steps_the_images_outer_loop_times() -> None:
    ctx = matching_context()
    before = ctx.images.detach().clone()
    stats = GradientMatching(outer_loop=3, inner_loop=2).step(ctx)
    assert ctx.steps == 3 and stats["match_loss"] > 0
    assert not torch.equal(before, ctx.images.detach())


def test_batchnorm_running_statistics_follow_real_batches_as_published() -> None:
    """As VICO's main.py: a train-mode forward of a real batch updates the running statistics
    with momentum 0.1 (from the fresh net's 0 / 1, never reset; a second outer step moves them
    on), then BatchNorm is frozen for matching."""
    ctx = matching_context(bn=True)
    net, matcher = ctx.new_net(), GradientMatching(bn_images_per_class=5)
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    mean, var = torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var)
    for seed in (1, 2):  # two outer steps
        ctx.generator.manual_seed(seed)
        matcher.freeze_batchnorm(net, ctx)
        assert not bn.training
        ctx.generator.manual_seed(seed)
        with torch.no_grad():
            feats = first_conv(torch.cat([ctx.sample_real(c, 5) for c in range(3)]))
        mean = 0.9 * mean + 0.1 * feats.mean((0, 2, 3))
        var = 0.9 * var + 0.1 * feats.var((0, 2, 3), unbiased=True)
        assert torch.allclose(bn.running_mean, mean, atol=1e-5)
        assert torch.allclose(bn.running_var, var, atol=1e-4)
    before = bn.running_mean.clone()
    matcher.class_losses(net, ctx)  # matching must not move the frozen statistics
    assert torch.equal(before, bn.running_mean)


def test_invalid_matching_settings_raise() -> None:
    with pytest.raises(ValueError, match="lr_img"):
        GradientMatching(lr_img=0)
    with pytest.raises(ValueError, match="init"):
        GradientMatching(init="zeros")
    with pytest.raises(ValueError, match="distance"):
        GradientMatching(distance="l1")


def coreset_data():
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0], [100.0], [101.0]]).view(6, 1, 1, 1)
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    return x, y


def test_random_coreset_picks_ipc_distinct_images_per_class() -> None:
    x = torch.randn(40, 1, 2, 2)
    y = torch.arange(4).repeat(10)
    idx = RandomCoreset("random").select(x, y, 4, 3, torch.Generator().manual_seed(0), None)
    assert idx.shape == (12,) and len(set(idx.tolist())) == 12
    assert y[idx].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_herding_on_a_hand_example() -> None:
    # Class 0 has features 0, 1, 2, 10 (mean 3.25). Herding first takes 2 (closest to the
    # mean); then the running mean (2 + f) / 2 is 1, 1.5 or 6 for f = 0, 1, 10, and 1.5 is the
    # closest to 3.25, so it takes 1. Class 1 (100, 101) is a tie: the first wins, then the other.
    x, y = coreset_data()
    idx = HerdingCoreset("herding", features="pixels").select(x, y, 2, 2, torch.Generator(), None)
    assert idx.tolist() == [2, 1, 4, 5]


def test_kcenter_on_a_hand_example() -> None:
    # Class 0: start at 2 (closest to the mean 3.25), the farthest from {2} is 10, and with a
    # third pick the farthest from {2, 10} is 0.
    x, y = coreset_data()
    idx = KCenterCoreset("kcenter", features="pixels").select(x, y, 2, 2, torch.Generator(), None)
    assert idx.tolist()[:2] == [2, 3]
    x3 = torch.cat([x[:4], x[:4] + 1000]).view(8, 1, 1, 1)
    y3 = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert KCenterCoreset("kcenter", features="pixels").select(
        x3, y3, 2, 3, torch.Generator(), None
    )[:3].tolist() == [2, 3, 0]


MATCHING_OPTIONS = sorted(p.stem for p in (CONF_DIR / "matching").glob("*.yaml"))


@pytest.mark.parametrize("option", MATCHING_OPTIONS)
def test_every_matching_option_answers_the_pipelines_questions(option, tmp_path) -> None:
    matcher = build(compose_config(f"matching={option}", output_dir=tmp_path).matching, "m")
    assert isinstance(matcher, Matcher) and matcher.name == option
    # What rdd.run and the learner ask, answered by every method (no attribute probing).
    assert matcher.image_grad_reduction in ("mean", "sum")
    assert matcher.factor >= 1 and isinstance(matcher.trains_on_real(10), bool)
    assert matcher.is_coreset == (option in ("random", "herding", "kcenter", "full"))
    assert matcher.whole_dataset == (option == "full")
    assert matcher.needs_experts == (matcher.initial_step_size is not None) == (option == "mtt")
    assert not matcher.group_losses  # nothing before a step


def test_the_contract_defaults_are_the_common_case() -> None:
    plain = Matcher()
    assert plain.state_dict() == {} and plain.trains_on_real(1) is False
    assert plain.initial_step_size is None and plain.factor == 1
    with pytest.raises(NotImplementedError, match="does not optimise"):
        plain.step(None)


def contract_members() -> set[str]:
    """Attributes and methods of rdd.matching.base.DistillContext."""
    from rdd.matching.base import DistillContext

    methods = {n for n, v in vars(DistillContext).items() if callable(v) and not n.startswith("_")}
    return methods | set(DistillContext.__annotations__)


def test_the_learner_and_the_test_fake_both_implement_the_matcher_contract() -> None:
    from rdd.distill.learner import SyntheticSetLearner

    ctx = matching_context()
    learner = SyntheticSetLearner(
        GradientMatching(), ctx.make_net, ctx.images.detach(), ctx.real_x, ctx.real_y, 3, 2, 0
    )
    members = contract_members()
    assert {"new_net", "image_step", "owned_batches", "robust_matching"} <= members
    for implementation in (learner, ctx):
        missing = {m for m in members if not hasattr(implementation, m)}
        assert not missing, f"{type(implementation).__name__} lacks {missing}"


def test_the_inner_network_trains_with_plain_sgd_as_published() -> None:
    """VICO's main.py trains the sampled network with SGD(lr=lr_net), no momentum: two
    epochs of one full batch are p - lr g(p), then that minus lr g(.) (an oracle by hand)."""
    ctx = matching_context()
    matcher = GradientMatching()  # the published defaults: lr_net 0.01, no momentum
    assert matcher.momentum_net == 0.0
    net = ctx.new_net()
    images, labels = ctx.images.detach(), ctx.labels
    oracle = ctx.new_net()
    for _ in range(2):  # one batch per epoch holds every image: the order does not matter
        loss = F.cross_entropy(oracle(images), labels)
        grads = torch.autograd.grad(loss, list(oracle.parameters()))
        with torch.no_grad():
            for param, grad in zip(oracle.parameters(), grads, strict=True):
                param -= matcher.lr_net * grad
    expected = [p.detach() for p in oracle.parameters()]
    matcher.train_net(net, matcher.net_optimizer(net), ctx, 2)
    for got, want in zip(net.parameters(), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    for option in ("dc", "dsa"):
        assert compose_config(f"matching={option}").matching.momentum_net == 0.0
