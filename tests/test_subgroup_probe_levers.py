"""benchmarks/subgroup_shift/probe_levers.py: the trimmed probe, the weighted loss column and
the misfit signature."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


def test_top_share_is_each_class_top_by_a_full_sort() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(40)[torch.randperm(120, generator=generator)]
    score = torch.randn(120, generator=generator)
    chosen = levers.top_share(score, labels, 3, 0.1)
    for c in range(3):
        members = (labels == c).nonzero().squeeze(1)
        expected = set(members[score[members].argsort(descending=True)[:4]].tolist())
        assert set(members[chosen[members]].tolist()) == expected
    assert int(chosen.sum()) == 12


def test_robust_z_centres_and_scales_each_class() -> None:
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(2).repeat_interleave(51)
    values = torch.cat(
        [torch.randn(51, generator=generator), 5 + 3 * torch.randn(51, generator=generator)]
    )
    z = levers.robust_z(values, labels, 2)
    for c in range(2):
        mine = z[labels == c].double().numpy()
        assert abs(np.median(mine)) < 1e-6
        assert np.median(np.abs(mine - np.median(mine))) * 1.4826 == pytest.approx(1, abs=1e-4)


def test_the_signature_ranks_the_shared_misfits_first() -> None:
    # the probe misfits the inverted images of both classes (complementary tints), and the
    # signature, fitted on each class's top 5 % by loss, ranks all 20 above the other 180
    data = toy_data()
    logit = levers.Signature(data.train_x, data.train_y, 2).logit(data.train_x)
    assert logit[data.train_subgroup].min() > logit[~data.train_subgroup].max()


def test_signature_loss_adds_the_scaled_logit_to_the_loss_column_only() -> None:
    data = toy_data()
    plain = KMeansClusterer(features="style_error", seed=0)
    signed = levers.SignatureLoss(seed=0)
    plain.fit(data.train_x, data.train_y, 2)
    signed.fit(data.train_x, data.train_y, 2)
    a = plain._raw_style(data.train_x, data.train_y)
    b = signed._raw_style(data.train_x, data.train_y)
    assert torch.allclose(b[:, :-1], a[:, :-1])
    logit = levers.Signature(data.train_x, data.train_y, 2).logit(data.train_x)
    loss = a[:, -1]
    weight = (loss - loss.median()).abs().median() / (logit - logit.median()).abs().median()
    assert torch.allclose(b[:, -1], loss + weight * logit, rtol=1e-5, atol=1e-5)


def test_a_signature_group_row_scores_the_rare_group() -> None:
    row = levers.group_row(toy_data(), "invert", "signature", 0, levers.SignatureLoss(seed=0))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[:3] == ["invert", "signature", "0"]
    assert cells[5] == "100.0 / 100.0"
