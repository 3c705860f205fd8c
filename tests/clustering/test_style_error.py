"""Tests for clustering.features=style_error: the linear probe against scikit-learn, and a rare
group that only the probe's loss finds."""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

import rdd.clustering.features as features_module
from rdd.clustering import KMeansClusterer, rare_group_discovery
from rdd.clustering.features import (
    LOSS_SCALE_FLOOR,
    MAD_TO_SIGMA,
    PROBE_L2,
    fit_linear_probe,
    probe_inputs,
    probe_loss,
    style_statistics,
)
from rdd.config.compose import build
from tests.conftest import compose_config


def mirrored_set(
    per_class: int = 200, rare: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Two classes of grey 8x8 images (5 % of each inverted by default), class 0 bright on the left and class 1 on the right,
    with ``rare`` of each class inverted (1 - x).

    An inverted image keeps its class's luminance, contrast, detail and top-bottom layout and
    has no colour either way, so no style statistic tells it apart; it looks like the other
    class, which a linear probe of the class sees.
    """
    generator = torch.Generator().manual_seed(seed)
    images, labels, altered = [], [], []
    for label in range(2):
        left = torch.linspace(0.8, 0.2, 8) if label == 0 else torch.linspace(0.2, 0.8, 8)
        base = left.view(1, 1, 1, 8).expand(per_class, 3, 8, 8)
        noise = 0.1 * torch.randn(per_class, 1, 8, 8, generator=generator).expand(-1, 3, -1, -1)
        raw = (base + noise).clone()
        raw[:rare] = 1 - raw[:rare]
        images.append(raw)
        labels.append(torch.full((per_class,), label))
        altered.append(torch.arange(per_class) < rare)
    return torch.cat(images), torch.cat(labels), torch.cat(altered)


def test_the_linear_probe_is_scikit_learns_l2_logistic_regression() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    # Overlapping classes (not separable), so the optimum is finite and both solvers reach it.
    images = torch.randn(120, 3, 8, 8, generator=generator) + 0.3 * labels.view(-1, 1, 1, 1)
    probe = fit_linear_probe(images, labels, num_classes=3)
    inputs = probe_inputs(images).double().numpy()
    standard = (inputs - inputs.mean(0)) / inputs.std(0, ddof=1)
    # Ours: mean cross-entropy + PROBE_L2 ||W||^2; scikit-learn: C * sum + ||W||^2 / 2.
    oracle = LogisticRegression(C=1 / (2 * PROBE_L2 * len(labels)), tol=1e-10, max_iter=10_000)
    expected = oracle.fit(standard, labels.numpy()).predict_proba(standard)
    ours = torch.softmax(
        torch.from_numpy(standard).float() @ probe["probe_weight"] + probe["probe_bias"], 1
    )
    assert np.abs(ours.numpy() - expected).max() < 2e-3
    # The loss is the cross-entropy of each image's own class under those probabilities.
    own = -np.log(expected[np.arange(120), labels.numpy()])
    assert np.allclose(probe_loss(images, labels, probe).numpy(), own, atol=5e-3)


def test_the_probe_is_deterministic_and_keeps_torchs_grad_mode() -> None:
    images, labels, _ = mirrored_set()
    with torch.no_grad():  # a caller inside a no-grad feature pass still gets a fitted probe
        first = fit_linear_probe(images, labels, num_classes=2)
    second = fit_linear_probe(images, labels, num_classes=2)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert first["probe_weight"].abs().sum() > 0


def test_style_error_finds_a_rare_group_that_style_statistics_miss() -> None:
    images, labels, altered = mirrored_set()
    found = {}
    for features in ("style", "style_error"):
        # loss_floor=0: the probe separates the mirrored classes almost perfectly, so its loss
        # has a MAD of hundredths of a nat and the inverted images lie only ~2 nats out; the
        # default floor of one nat would scale them back into the style statistics' noise.
        clusterer = KMeansClusterer(
            k=2, features=features, pool_per_class=None, seed=0, shape="clusters", loss_floor=0
        )
        groups = clusterer.fit(images, labels, num_classes=2)
        found[features] = rare_group_discovery(groups, labels, altered, 2, 2)
        if features == "style_error":  # the probe's loss column alone separates them
            loss = clusterer.features_of(images, labels=labels)[:, -1]
            assert loss[altered].min() > loss[~altered].max()
    assert found["style_error"] == {"cluster/rare_purity": 1.0, "cluster/rare_recall": 1.0}
    assert found["style"]["cluster/rare_purity"] < 0.5


def test_style_error_needs_labels_and_saves_its_probe() -> None:
    images, labels, _ = mirrored_set()
    clusterer = KMeansClusterer(
        k=2, features="style_error", pool_per_class=None, seed=0, shape="clusters"
    )
    clusterer.fit(images, labels, num_classes=2)
    with pytest.raises(ValueError, match="needs the images' labels"):
        clusterer.features_of(images)
    assert clusterer.features_of(images, labels=labels).shape == (400, 8)
    state = clusterer.state_dict()
    assert {"probe_centre", "probe_scale", "probe_weight", "probe_bias"} <= set(state)
    fresh = KMeansClusterer(
        k=2, features="style_error", pool_per_class=None, seed=0, shape="clusters"
    )
    fresh.load_state_dict(state)
    assert torch.equal(fresh.assign(images, labels), clusterer.assign(images, labels))


def test_style_error_is_chosen_from_the_command_line(tmp_path: Path) -> None:
    overrides = ("clustering=faiss_kmeans", "clustering.features=style_error", "clustering.k=2")
    clusterer = hydra.utils.instantiate(compose_config(*overrides, output_dir=tmp_path).clustering)
    clusterer.pool_per_class = None
    images, labels, _ = mirrored_set()
    assert clusterer.fit(images, labels, num_classes=2).shape == (400,)
    assert clusterer.centroids.shape == (2, 2, 8)


def test_the_loss_columns_scale_is_its_mad_sigma_but_at_least_one_nat() -> None:
    images, labels, _ = mirrored_set()
    clusterer = KMeansClusterer(k=2, pool_per_class=None, seed=0, shape="clusters")
    clusterer.fit(images, labels, num_classes=2)  # style_error, the default
    probe = {name: getattr(clusterer, name) for name in features_module.PROBE_BUFFERS}
    raw = torch.cat(
        [style_statistics(images), probe_loss(images, labels, probe).unsqueeze(1)], 1
    ).numpy()
    # torch's median of an even count is the lower middle value; a zero MAD scales by 1.
    centre = np.quantile(raw, 0.5, axis=0, method="lower")
    mad_sigma = MAD_TO_SIGMA * np.quantile(np.abs(raw - centre), 0.5, axis=0, method="lower")
    mad_sigma[mad_sigma == 0] = 1.0
    # The probe separates the mirrored classes: its loss's spread is a few hundredths of a nat.
    assert mad_sigma[-1] < 0.1
    expected = np.append(mad_sigma[:-1], LOSS_SCALE_FLOOR)
    assert np.allclose(clusterer.feature_scale.numpy(), expected, rtol=1e-5)
    # A loss spread wider than the floor keeps its own scale; only the last column is floored.
    wide = torch.tensor([0.5, 0.2, 3.0])
    assert torch.equal(features_module.floor_loss_scale(wide, LOSS_SCALE_FLOOR), wide)
    narrow = torch.tensor([0.01, 0.02, 0.03])
    assert torch.equal(
        features_module.floor_loss_scale(narrow, 0.5), torch.tensor([0.01, 0.02, 0.5])
    )


def digits_clean(output_dir: Path):
    """scikit-learn's digits as a run loads them, with no rare subgroup."""
    data = build(compose_config("data=digits", output_dir=output_dir).data, "data")
    data.setup()
    return data


@pytest.mark.parametrize("seed", [1, 11, 17])
def test_a_near_perfect_probes_misfits_do_not_make_a_rare_group(seed: int, tmp_path: Path) -> None:
    # The probe classifies digits almost perfectly, so its loss's MAD is tiny. On digits with
    # nothing altered, scaled by that MAD (loss_floor=0) the misfits stand apart and auto
    # merges every class's smallest cluster as a "rare group"; with the default floor it
    # keeps the k clusters (seeds where the unfloored fit errs, of 20 tried).
    data = digits_clean(tmp_path)
    merged = {}
    for floor in (0.0, LOSS_SCALE_FLOOR):
        clusterer = KMeansClusterer(seed=seed, loss_floor=floor)  # else the defaults
        clusterer.fit(data.train_x, data.train_y, data.num_classes)
        merged[floor] = clusterer.fit_stats()["cluster/merged"]
    assert merged == {0.0: 1.0, LOSS_SCALE_FLOOR: 0.0}
