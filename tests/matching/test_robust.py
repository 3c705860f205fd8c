"""The robust layer inside DC/DSA: gradients of the group risk, and risk=none is the base method."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from rdd.config.errors import UserError
from rdd.matching.gradient import GradientMatching
from rdd.matching.robust import group_sums, risk_cross_entropy
from rdd.nets import build_net
from rdd.risk import CVaR, MeanRisk
from rdd.run import run
from rdd.synset import SyntheticSet
from tests.conftest import TINY, compose_config
from tests.fakes import FakeContext


def grouped_context(risk: nn.Module) -> FakeContext:
    """Two classes that share one fixed real batch in three subgroups of different difficulty
    (the third far off: its gradient differs most), float64. ``ctx.net``: the network the
    tests match with (built once, seeded 0)."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(12, 1, 6, 6, generator=gen, dtype=torch.float64)
    real[8:] *= 4
    groups = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    images = torch.randn(4, 1, 6, 6, generator=gen, dtype=torch.float64)
    ctx = FakeContext(
        images,
        torch.tensor([0, 0, 1, 1]),
        torch.cat([real, real]),
        torch.tensor([0] * 12 + [1] * 12),
        torch.cat([groups, groups]),  # every class draws the same three subgroups here
        make_net=lambda: build_net(
            {"_target_": "rdd.nets.convnet.ConvNet", "width": 4, "depth": 2}, 1, 2, (6, 6)
        ).double(),
        risk=risk,
        robust_matching=True,
        robust_networks=True,
        net_seed=0,
    )
    ctx.net = ctx.new_net()
    return ctx


def nudge(images: torch.Tensor, index: tuple[int, ...], delta: float) -> None:
    with torch.no_grad():
        images[index] += delta


def test_robust_dc_matches_each_subgroup_gradient_with_its_owned_images() -> None:
    """Class 0's image 0 belongs to subgroup 0, image 1 to subgroup 1 (of three): the loss
    is the count-weighted sum of each group's distance between the gradient on its owned
    image and its own real gradient; a group without images is not matched, and a group's
    distance depends on its own image only (an oracle through GradientMatching.match)."""
    ctx = grouped_context(CVaR(alpha=0.5))
    matcher = GradientMatching()
    params = [p for p in ctx.net.parameters() if p.requires_grad]
    loss = matcher.class_losses(ctx.net, ctx)[0]
    real = ctx.real_x[:12]
    parts = [
        matcher.match(ctx.net, params, real[4 * g : 4 * g + 4], ctx.images[g : g + 1], 0).item()
        for g in range(2)
    ]
    assert loss.item() == pytest.approx(sum(parts) / 2, rel=1e-10)
    (grad,) = torch.autograd.grad(loss, ctx.images)
    eps = 1e-6
    for index in [(0, 0, 2, 3), (1, 0, 0, 0)]:
        nudge(ctx.images, index, eps)
        up = matcher.class_losses(ctx.net, ctx)[0].item()
        nudge(ctx.images, index, -2 * eps)
        down = matcher.class_losses(ctx.net, ctx)[0].item()
        nudge(ctx.images, index, eps)
        assert grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-8)


def test_group_sums_and_counts() -> None:
    sums, counts = group_sums(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0, 2, 2]), 4)
    assert sums.tolist() == [1.0, 0.0, 6.0, 0.0] and counts.tolist() == [1.0, 0.0, 2.0, 0.0]


def test_network_risk_weights_the_worst_group() -> None:
    logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 1.0], [4.0, 0.0]], requires_grad=True)
    labels, groups = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    mean, _, _ = risk_cross_entropy(logits, labels, groups, 2, MeanRisk())
    worst, sums, counts = risk_cross_entropy(logits, labels, groups, 2, CVaR(alpha=0.5))
    assert worst.item() == pytest.approx((sums / counts).max().item())
    assert worst.item() > mean.item()


def test_risk_none_reproduces_the_base_method_exactly(tmp_path) -> None:
    base = compose_config(*TINY, "matching=dsa", output_dir=tmp_path / "base")
    with_clusters = compose_config(
        *TINY,
        "matching=dsa",
        "risk=none",
        "clustering=faiss_kmeans",
        "clustering.k=2",
        output_dir=tmp_path / "none",
    )
    run(base)
    run(with_clusters)
    assert torch.equal(
        SyntheticSet.load(tmp_path / "base").images, SyntheticSet.load(tmp_path / "none").images
    )


@pytest.mark.parametrize("risk", ["cvar", "entropic", "max_group", "two_level"])
def test_robust_dsa_runs_end_to_end_on_digits(risk: str, tmp_path) -> None:
    cfg = compose_config(
        *TINY,
        "matching=dsa",
        f"risk={risk}",
        "clustering=faiss_kmeans",
        "clustering.k=2",
        "robust.net_train_data=real",
        output_dir=tmp_path,
    )
    metrics = run(cfg)
    assert 0 <= metrics["test_acc"] <= 100


def test_group_losses_risk_value_and_cluster_sizes_are_logged(tmp_path) -> None:
    cfg = compose_config(
        *TINY,
        "matching=dc",
        "risk=cvar",
        "clustering=faiss_kmeans",
        "clustering.k=2",
        "logger=csv",
        "matching.iterations=2",
        output_dir=tmp_path,
    )
    run(cfg)
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    for key in (
        "alloc/moved",
        "risk/group_loss_min",
        "risk/group_loss_max",
        "cluster/size_min",
        "cluster/size_max",
        "cluster/separation",  # clustering.shape=auto's statistic and decision
        "cluster/merged",
    ):
        assert key in header, key
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    logged = [r for r in rows if r["risk/group_loss_min"]]
    assert len(logged) == 2
    for row in logged:
        assert (
            float(row["risk/group_loss_min"])
            <= float(row["risk/group_loss_mean"])
            <= float(row["risk/group_loss_max"])
        )


def test_wandb_offline_gets_the_group_loss_histogram(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(
        *TINY,
        "matching=dc",
        "risk=cvar",
        "clustering=faiss_kmeans",
        "clustering.k=2",
        "logger=wandb",
        "logger.wandb.offline=true",
        output_dir=tmp_path,
    )
    run(cfg)
    # The offline run's log (what `wandb sync` uploads) holds the histogram records. W&B's
    # service process may still be writing it when finish() returns (seen on a loaded
    # machine), so the file is read until it holds them or 60 s have passed.
    deadline, log = time.monotonic() + 60, b""
    while time.monotonic() < deadline and not (b"risk/group_losses" in log and b"histogram" in log):
        logs = list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))
        log = logs[0].read_bytes() if logs else b""
        time.sleep(0.5)
    assert b"risk/group_losses" in log and b"histogram" in log


def test_a_risk_on_networks_trained_on_the_synthetic_set_is_refused(tmp_path) -> None:
    cfg = compose_config(
        *TINY,
        "matching=dc",
        "risk=cvar",
        "clustering.k=2",
        "robust.targets=[networks,matching]",
        output_dir=tmp_path,
    )
    with pytest.raises(UserError, match="robust.net_train_data=real"):
        run(cfg)
    assert not (tmp_path / "synset.pt").exists()
