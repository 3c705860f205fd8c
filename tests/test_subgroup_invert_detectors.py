"""benchmarks/subgroup_shift/invert_detectors.py: its histograms, opponents and colouriser."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

SCRIPT = (
    Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "invert_detectors.py"
)
spec = importlib.util.spec_from_file_location("subgroup_invert_detectors", SCRIPT)
detectors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(detectors)


def test_histogram_against_numpy() -> None:
    values = torch.rand(3, 500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    edges = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    ours = detectors.histogram(values, edges)
    bins = np.concatenate([[0.0], edges.numpy(), [1.0]])
    for row, counts in zip(values.numpy(), ours.numpy(), strict=True):
        expected, _ = np.histogram(row, bins=bins)
        np.testing.assert_allclose(counts, expected / len(row))


def test_inversion_negates_every_opponent_channel() -> None:
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    upright, inverted = detectors.opponents(images), detectors.opponents(1 - images)
    assert torch.allclose(inverted[:, 0], 1 - upright[:, 0])  # luminance
    assert torch.allclose(inverted[:, 1:], -upright[:, 1:], atol=1e-6)  # both opponents


def test_colour_histograms_are_square_rooted_distributions() -> None:
    images = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    features = detectors.colour_histograms(images)
    bins = detectors.MARGINAL_BINS
    assert features.shape == (6, 3 * bins + detectors.JOINT_BINS**2)
    blocks = [features[:, c * bins : (c + 1) * bins] for c in range(3)]
    blocks.append(features[:, 3 * bins :])
    for block in blocks:  # each histogram's squares sum to one
        np.testing.assert_allclose((block**2).sum(1), 1.0, rtol=1e-9)


def test_colourisation_error_is_per_image_and_seeded() -> None:
    images = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    first = detectors.colourisation_error(images, seed=0)
    assert first.shape == (16,) and np.isfinite(first).all() and (first >= 0).all()
    np.testing.assert_array_equal(first, detectors.colourisation_error(images, seed=0))
