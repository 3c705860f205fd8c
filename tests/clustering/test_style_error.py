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

from rdd.clustering import KMeansClusterer, rare_group_discovery
from rdd.clustering.features import PROBE_L2, fit_linear_probe, probe_inputs, probe_loss
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
        clusterer = KMeansClusterer(
            k=2, features=features, pool_per_class=None, seed=0, shape="clusters"
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
