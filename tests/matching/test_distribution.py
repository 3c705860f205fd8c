"""DM and IDM: the loss against a hand computation, partition-and-expansion, the network
queue, the class-aware cross-entropy, and risk=none reproducing plain IDM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rdd.distill.expansion import check_factor, expand, pack
from rdd.matching.distribution import DistributionMatching, frozen
from rdd.matching.queue import NetQueue
from rdd.nets import build_net
from rdd.risk import CVaR
from tests.conftest import TINY, compose_config
from tests.fakes import FakeContext

CONVNET = {"_target_": "rdd.nets.convnet.ConvNet", "width": 4, "depth": 2}


def dm_context(risk: nn.Module | None = None) -> FakeContext:
    """Two classes of six fixed real images in two subgroups each (0-1, 2-3), float64, real
    batches in order; records the losses given to image_step."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(12, 1, 8, 8, generator=gen, dtype=torch.float64)
    images = torch.randn(4, 1, 8, 8, generator=gen).double()
    return FakeContext(
        images,
        torch.tensor([0, 0, 1, 1]),
        real,
        torch.tensor([0] * 6 + [1] * 6),
        torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]),
        make_net=lambda: build_net(CONVNET, 1, 2, (8, 8)).double(),
        risk=risk,
        robust_matching=risk is not None,
    )


def real_of(ctx: FakeContext, c: int) -> torch.Tensor:
    return ctx.real_x[ctx.real_y == c]


def hand_dm_loss(net: nn.Module, real: torch.Tensor, syn: torch.Tensor) -> float:
    """sum_d (mean_i real_embed[i, d] - mean_j syn_embed[j, d])^2, in NumPy."""
    with torch.no_grad():
        r, s = net.embed(real).numpy(), net.embed(syn).numpy()
    return float(np.sum((r.sum(0) / len(r) - s.sum(0) / len(s)) ** 2))


def test_dm_loss_equals_a_hand_computation() -> None:
    ctx = dm_context()
    matcher = DistributionMatching(dsa=False)
    net = ctx.new_net()
    for c in range(2):
        got = matcher.class_loss(net, 0.0, ctx, c)
        want = hand_dm_loss(net, real_of(ctx, c), ctx.images[2 * c : 2 * c + 2])
        assert got.item() == pytest.approx(want, rel=1e-10)


def test_dm_steps_once_per_iteration_and_idm_once_per_class() -> None:
    ctx = dm_context()
    DistributionMatching(dsa=False).step(ctx)
    assert ctx.steps == 1
    ctx = dm_context()
    DistributionMatching(dsa=False, step_per_class=True, queue_size=4, fetch_nets=0).step(ctx)
    assert ctx.steps == 2


def test_dm_gradient_reaches_the_images_only() -> None:
    ctx = dm_context()
    net = ctx.new_net()
    with frozen(net):  # as in a step: the network only embeds
        loss = DistributionMatching(dsa=False).class_loss(net, 0.0, ctx, 1)
    loss.backward()
    assert ctx.images.grad[2:].abs().sum() > 0  # class 1's images
    assert ctx.images.grad[:2].abs().sum() == 0  # class 0's images are not in class 1's loss
    assert all(p.grad is None for p in net.parameters())


def test_robust_dm_matches_each_subgroup_with_the_images_it_owns() -> None:
    """Subgroup 0 of class 0 owns image 0, subgroup 1 image 1: the loss is each group's
    squared distance between its owned image and its own real images, weighted by its share
    of the class's images; a group's loss never reaches another group's image."""
    ctx = dm_context(risk=CVaR(alpha=0.5))
    net = ctx.new_net()
    got = DistributionMatching(dsa=False).class_loss(net, 0.0, ctx, 0)
    real = real_of(ctx, 0)
    parts = [hand_dm_loss(net, real[3 * g : 3 * g + 3], ctx.images[g : g + 1]) for g in range(2)]
    assert got.item() == pytest.approx(sum(parts) / 2, rel=1e-10)
    # Owned: moving the real images of group 1 changes nothing for image 0.
    ctx.real_x[3:6] += 5.0
    (grad,) = torch.autograd.grad(
        DistributionMatching(dsa=False).class_loss(net, 0.0, ctx, 0), ctx.images
    )
    ctx.real_x[3:6] -= 5.0
    (before,) = torch.autograd.grad(
        DistributionMatching(dsa=False).class_loss(net, 0.0, ctx, 0), ctx.images
    )
    torch.testing.assert_close(grad[0], before[0])
    assert not torch.allclose(grad[1], before[1])
    assert grad[2:].abs().sum() == 0  # class 1's images


# -- partition-and-expansion -------------------------------------------------------------------
def tiled(values: list[list[float]]) -> torch.Tensor:
    """A 1x4x4 image whose 2x2 tiles are constant: values[i][j] in tile row i, column j."""
    image = torch.zeros(1, 4, 4)
    for i in range(2):
        for j in range(2):
            image[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = values[i][j]
    return image


def test_expand_cuts_tiles_in_the_published_order_and_upsamples_them() -> None:
    images = torch.stack([tiled([[1, 2], [3, 4]]), tiled([[5, 6], [7, 8]])])
    out, labels = expand(images, torch.tensor([0, 1]), 2)
    assert out.shape == (8, 1, 4, 4)
    # order: tile (0,0) of every image, then (1,0), (0,1), (1,1); a constant tile stays constant
    want = [1, 5, 3, 7, 2, 6, 4, 8]
    assert [float(x.unique()) for x in out] == want
    assert all(x.unique().numel() == 1 for x in out)
    assert labels.tolist() == [0, 1] * 4


def test_expand_factor_one_is_the_identity_and_a_bad_factor_is_refused() -> None:
    images = torch.randn(3, 1, 6, 6)
    out, labels = expand(images, torch.arange(3), 1)
    assert out is images and labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="does not divide"):
        check_factor(4, (6, 6))
    with pytest.raises(ValueError, match="positive integer"):
        DistributionMatching(factor=0)


def test_pack_then_expand_gives_back_downscaled_draws() -> None:
    draws = [torch.full((2, 3, 9, 9), float(k)) for k in range(9)]
    images, _ = expand(pack(draws, 3), torch.zeros(2, dtype=torch.long), 3)
    assert torch.allclose(images, torch.cat(draws), atol=1e-6)
    smooth = [torch.randn(1, 1, 8, 8) for _ in range(4)]
    up, _ = expand(pack(smooth, 2), torch.zeros(1, dtype=torch.long), 2)
    down_up = F.interpolate(
        F.interpolate(smooth[1], size=(4, 4), mode="bilinear"), size=(8, 8), mode="bilinear"
    )
    assert torch.allclose(up[1:2], down_up)


def test_expansion_is_differentiable() -> None:
    images = torch.randn(2, 1, 4, 4, requires_grad=True)
    out, _ = expand(images, torch.zeros(2, dtype=torch.long), 2)
    out.sum().backward()
    # bilinear upsampling by 2 spreads each pixel's value over 4 output pixels
    assert torch.allclose(images.grad, torch.full_like(images, 4.0))


# -- the network queue ---------------------------------------------------------------------------
def flat_params(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()]).clone()


def test_queue_grows_rotates_out_the_oldest_and_respects_its_size() -> None:
    ctx = dm_context()
    queue = NetQueue(size=3, generate_every=2, push=1, initial=1, fetch=0)
    sizes, first = [], []
    for it in range(6):
        queue.refresh(ctx, it)
        sizes.append(len(queue.entries))
        first.append(queue.entries[0])
    assert sizes == [2, 2, 3, 3, 3, 3]
    assert first[3] is first[0] and first[4] is not first[0]  # pushed at 4: the oldest left
    picks = queue.pick(ctx, 2)
    assert len({id(p) for p in picks}) == 2


def test_queue_trains_fetched_networks_on_real_data_and_counts_accuracy() -> None:
    ctx = dm_context()
    queue = NetQueue(
        size=10, generate_every=100, push=1, initial=3, fetch=2, train_steps=3, batch=5
    )
    queue.refresh(ctx, 0)
    before = [flat_params(e.net) for e in queue.entries]
    queue.train(ctx)
    changed = [
        not torch.equal(b, flat_params(e.net)) for b, e in zip(before, queue.entries, strict=True)
    ]
    assert sum(changed) == 2  # exactly the fetched ones
    trained = [e for e, moved in zip(queue.entries, changed, strict=True) if moved]
    assert all(e.seen == 15 for e in trained)
    assert all(0 <= e.accuracy <= 100 for e in trained)
    assert all(
        e.seen == 0 and e.accuracy == 0
        for e, m in zip(queue.entries, changed, strict=True)
        if not m
    )


# -- class-aware cross-entropy ----------------------------------------------------------------------
def test_ce_weight_adds_weight_times_accuracy_times_cross_entropy() -> None:
    ctx = dm_context()
    net = ctx.new_net()
    plain = DistributionMatching(dsa=False).class_loss(net, 50.0, ctx, 1)
    weighted = DistributionMatching(dsa=False, ce_weight=0.1).class_loss(net, 50.0, ctx, 1)
    ce = F.cross_entropy(net(ctx.images[2:]), ctx.labels[2:])
    assert (weighted - plain).item() == pytest.approx(0.1 * 50.0 * ce.item(), rel=1e-10)
    untrained = DistributionMatching(dsa=False, ce_weight=0.1).class_loss(net, 0.0, ctx, 1)
    assert untrained.item() == pytest.approx(plain.item(), rel=1e-12)  # no accuracy yet: no CE


# -- whole runs -------------------------------------------------------------------------------------
IDM_TINY = [*TINY, "matching=idm", "matching.iterations=2", "matching.batch_real=32"]
IDM_TINY += ["matching.batch_train=32", "matching.train_steps=2", "matching.generate_every=1"]


def distilled(tmp_path, name: str, *overrides: str) -> torch.Tensor:
    from rdd.run import run
    from rdd.synset import SyntheticSet

    run(compose_config(*IDM_TINY, *overrides, output_dir=tmp_path / name))
    return SyntheticSet.load(tmp_path / name / "synset.pt").images


def test_risk_none_reproduces_plain_idm_and_robust_idm_differs(tmp_path) -> None:
    plain = distilled(tmp_path, "plain")
    with_clustering = distilled(tmp_path, "none", "risk=none", "clustering=faiss_kmeans")
    assert torch.equal(plain, with_clustering)
    robust = distilled(tmp_path, "cvar", "risk=cvar", "clustering.k=2")
    assert not torch.allclose(plain, robust)


def test_idm_evaluates_the_expanded_set(tmp_path) -> None:
    from rdd.synset import SyntheticSet

    distilled(tmp_path, "idm")
    synset = SyntheticSet.load(tmp_path / "idm" / "synset.pt")
    assert synset.factor == 2 and synset.images.shape[0] == 10 * 2
    images, labels = synset.expanded()
    assert images.shape == (80, *synset.images.shape[1:])
    assert torch.bincount(labels).tolist() == [8] * 10


def test_rdd_evaluate_trains_on_the_expanded_set(tmp_path, monkeypatch) -> None:
    """`python -m rdd.evaluate` reads the factor from the set's metadata and expands it."""
    import rdd.evaluate as evaluate_module
    from rdd.eval.scoring import Evaluation

    distilled(tmp_path, "idm")
    seen = {}

    def record(images, labels, *args, **kwargs):
        seen["images"], seen["labels"] = images.shape, labels
        return Evaluation(
            {f"{k}{s}": 0.0 for k in ("test_acc", "val_acc") for s in ("", "_std")}, {}
        )

    monkeypatch.setattr(evaluate_module, "evaluate_synset", record)
    cfg = compose_config(
        f"synset={tmp_path / 'idm' / 'synset.pt'}",
        "eval.epochs=1",
        config_name="evaluate",
        output_dir=tmp_path / "evaluated",
    )
    evaluate_module.evaluate(cfg)
    assert seen["images"][0] == 80 and torch.bincount(seen["labels"]).tolist() == [8] * 10


def test_queue_accuracy_restarts_every_reset_interval_as_published() -> None:
    """IDM's code resets its accuracy meters at every evaluation (--eval_interval, 100): the CE
    weight follows the accuracy since the last reset, and is 0 right after one."""
    ctx = dm_context()
    queue = NetQueue(size=10, generate_every=100, initial=2, fetch=2, train_steps=1, batch=4)
    queue.reset_every = 3
    seen = []
    for it in range(7):
        queue.refresh(ctx, it)
        seen.append(sum(e.seen for e in queue.entries))
        queue.train(ctx)
    # 2 networks x 4 images trained per iteration; the counts restart at iterations 3 and 6
    assert seen == [0, 8, 16, 0, 8, 16, 0]
    assert DistributionMatching(queue_size=4).queue.reset_every == 100  # IDM's default
    with pytest.raises(ValueError, match="accuracy_reset_every"):
        DistributionMatching(accuracy_reset_every=-1)
    for ipc, every in ((10, 100), (50, 500)):
        cfg = compose_config(f"experiment=idm_cifar10_ipc{ipc}")
        assert cfg.matching.accuracy_reset_every == every


def test_a_batchnorm_net_matches_all_classes_through_one_forward_as_published() -> None:
    """VICO's main_DM.py, ConvNetBN branch: the real batches of every class go through one
    forward (BatchNorm's batch statistics span all classes), the synthetic ones through
    another, then per-class mean embeddings are matched; one image step."""
    bn_net = {**CONVNET, "norm": "batchnorm"}
    ctx = dm_context()
    ctx.make_net = lambda: build_net(bn_net, 1, 2, (8, 8)).double()
    net = ctx.new_net()
    matcher = DistributionMatching(dsa=False)
    net.train()
    with torch.no_grad():
        real = net.embed(torch.cat([real_of(ctx, 0), real_of(ctx, 1)])).numpy()
        syn = net.embed(ctx.images).numpy()
    want = sum(
        float(np.sum((real[6 * c : 6 * c + 6].mean(0) - syn[2 * c : 2 * c + 2].mean(0)) ** 2))
        for c in range(2)
    )
    per_class = sum(matcher.class_loss(net, 0.0, ctx, c).item() for c in range(2))
    assert matcher.match_and_step(net, 0.0, ctx).item() == pytest.approx(want / 2, rel=1e-10)
    assert ctx.steps == 1 and ctx.losses[0].item() == pytest.approx(want, rel=1e-10)
    assert abs(per_class - want) > 1e-6 * want  # the per-class forward would differ
