"""benchmarks/subgroup_shift/probe_levers.py: the trimmed probe and the weighted loss column."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rdd.clustering import KMeansClusterer
from rdd.clustering.features import fit_linear_probe, probe_loss

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "probe_levers.py"
spec = importlib.util.spec_from_file_location("subgroup_probe_levers", SCRIPT)
levers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(levers)


def toy_data() -> SimpleNamespace:
    """Two classes of 100 tinted 3x8x8 images, the first 10 of each inverted."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(100)
    tint = torch.tensor([[0.8, 0.3, 0.2], [0.2, 0.4, 0.9]])[labels].view(-1, 3, 1, 1)
    images = (tint + 0.2 * torch.randn(200, 3, 8, 8, generator=generator)).clamp(0, 1)
    altered = (torch.arange(200) % 100) < 10
    images[altered] = 1 - images[altered]
    return SimpleNamespace(train_x=images, train_y=labels, num_classes=2, train_subgroup=altered)


def test_no_trim_is_the_default_probe() -> None:
    data = toy_data()
    default = probe_loss(
        data.train_x, data.train_y, fit_linear_probe(data.train_x, data.train_y, 2)
    )
    trimmed = levers.trimmed_probe_loss(data.train_x, data.train_y, 2, 0.2, rounds=0)
    assert torch.equal(trimmed, default)


def test_one_round_refits_without_each_class_top_share() -> None:
    data = toy_data()
    x, y = data.train_x, data.train_y
    first = probe_loss(x, y, fit_linear_probe(x, y, 2))
    # each class's 10 highest losses (of 100) by a full sort, then a fit on the other 180
    keep = torch.ones(200, dtype=torch.bool)
    for c in range(2):
        members = (y == c).nonzero().squeeze(1)
        keep[members[first[members].argsort(descending=True)[:10]]] = False
    expected = probe_loss(x, y, fit_linear_probe(x[keep], y[keep], 2))
    trimmed = levers.trimmed_probe_loss(x, y, 2, 0.1, rounds=1)
    assert torch.allclose(trimmed, expected)
    assert not torch.allclose(trimmed, first)


@pytest.mark.parametrize("weight", [0.5, 2.0, 3.0])
def test_the_weight_scales_the_loss_column_only(weight: float) -> None:
    data = toy_data()
    plain = KMeansClusterer(features="style_error", seed=0)
    weighted = levers.WeightedLoss(weight, seed=0)
    plain.fit(data.train_x, data.train_y, 2)
    weighted.fit(data.train_x, data.train_y, 2)
    a = plain.features_of(data.train_x, labels=data.train_y)
    b = weighted.features_of(data.train_x, labels=data.train_y)
    assert torch.allclose(b[:, :-1], a[:, :-1])
    assert torch.allclose(b[:, -1], weight * a[:, -1], rtol=1e-5, atol=1e-6)


def test_a_weight_row_scores_the_rare_group() -> None:
    # columns: transform, weight, seed, excess, decision, "purity / recall"
    cells = [c.strip() for c in levers.weight_row(toy_data(), "invert", 0, 1.0).split("|")[1:-1]]
    assert cells[:3] == ["invert", "1", "0"]
    assert cells[4] in ("rare_vs_rest", "clusters")
    # complementary tints stand far apart in the style columns: one cluster holds them all
    assert cells[5] == "100.0 / 100.0"
