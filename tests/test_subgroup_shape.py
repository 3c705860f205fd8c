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


def test_per_class_silhouettes_match_sklearn() -> None:
    data = toy_data(grey=True)
    clusterer = KMeansClusterer(seed=0)
    clusterer.fit(data.train_x, data.train_y, 2)
    features = clusterer.features_of(data.train_x)
    scores = shape.class_silhouettes(features, data.train_y, clusterer.assignments, clusterer.k)
    for c in range(2):
        mine = data.train_y == c
        local = (clusterer.assignments[mine] - 5 * c).numpy()
        smallest = int(torch.bincount(torch.from_numpy(local), minlength=5).argmin())
        expected = silhouette_samples(features[mine].numpy(), local)[local == smallest].mean()
        assert scores[c] == pytest.approx(expected, rel=1e-5)


def test_a_row_names_the_decision_and_scores_the_rare_group() -> None:
    grey = shape.row(toy_data(grey=True), "grayscale", 0).split()
    assert grey[:2] == ["grayscale", "0"] and grey[4] == "rare_vs_rest"
    assert float(grey[5]) == pytest.approx(100.0) and float(grey[6]) == pytest.approx(100.0)
    plain = shape.row(toy_data(grey=False), "clean", 0).split()
    assert plain[4] == "clusters" and len(plain) == 5  # no subgroup: no purity
    assert float(plain[2]) < 0.3 <= float(grey[2])
