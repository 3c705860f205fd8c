"""benchmarks/subgroup_shift/shape.py: the per-class silhouettes and a row of its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sklearn.metrics import silhouette_samples

from rdd.clustering import KMeansClusterer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "shape.py"
spec = importlib.util.spec_from_file_location("subgroup_shape", SCRIPT)
shape = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shape)


def toy_data(grey: bool) -> SimpleNamespace:
    """Two classes of 200 colourful 3x8x8 images; with ``grey`` 10 % of each made grey."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(200)
    tint = torch.tensor([[0.8, 0.3, 0.2], [0.2, 0.4, 0.9]])[labels].view(-1, 3, 1, 1)
    images = (tint + 0.15 * torch.randn(400, 3, 8, 8, generator=generator)).clamp(0, 1)
    altered = (torch.arange(400) % 200) < 20 if grey else None
    if grey:
        images[altered] = images[altered].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return SimpleNamespace(train_x=images, train_y=labels, num_classes=2, train_subgroup=altered)


def test_per_class_figures_match_sklearn() -> None:
    data = toy_data(grey=True)
    clusterer = KMeansClusterer(seed=0)
    clusterer.fit(data.train_x, data.train_y, 2)
    features = clusterer.features_of(data.train_x, labels=data.train_y)
    clusters = clusterer.assignments
    silhouettes = shape.class_separations(
        features, data.train_y, clusters, 5, of=shape.smallest_cluster_silhouette
    )
    excesses = shape.class_separations(features, data.train_y, clusters, 5)
    for c in range(2):
        mine = data.train_y == c
        local = (clusters[mine] - 5 * c).numpy()
        smallest = int(torch.bincount(torch.from_numpy(local), minlength=5).argmin())
        scores = silhouette_samples(features[mine].numpy(), local)
        assert silhouettes[c] == pytest.approx(scores[local == smallest].mean(), abs=1e-5)
        assert excesses[c] == pytest.approx(
            scores[local == smallest].mean() - scores.mean(), abs=1e-5
        )


def test_a_row_names_the_decision_and_scores_the_rare_group() -> None:
    # columns: transform, seed, silhouette, excess, its class range, decision, purity, recall
    grey = shape.row(toy_data(grey=True), "grayscale", 0).split()
    assert grey[:2] == ["grayscale", "0"] and grey[5] == "rare_vs_rest"
    assert float(grey[6]) == pytest.approx(100.0) and float(grey[7]) == pytest.approx(100.0)
    plain = shape.row(toy_data(grey=False), "clean", 0).split()
    assert plain[5] == "clusters" and len(plain) == 6  # no subgroup: no purity
    assert float(plain[3]) < 0.07 <= float(grey[3])
