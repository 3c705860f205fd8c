"""Tests for clustering.features=style: the statistics, their scaling, the clusterer on them."""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import pytest
import torch
from torch import Tensor

from rdd.clustering import (
    STYLE_NAMES,
    KMeansClusterer,
    rare_group_discovery,
    robust_scaling,
    style_statistics,
)
from rdd.config.errors import UserError
from tests.conftest import compose_config

# Normalisation like CIFAR-10's: unequal channel means and stds.
MEAN = torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1)
STD = torch.tensor([0.20, 0.19, 0.21]).view(1, 3, 1, 1)


def colour_images(n: int, seed: int) -> Tensor:
    """n smooth random colour images in [0, 1], (n, 3, 8, 8)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=8, mode="bilinear", align_corners=False)


def toy_set(per_class: int = 30, grey: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """Two classes of normalised colour images, ``grey`` of each made grey (equal channels)."""
    images, labels, altered = [], [], []
    for label in range(2):
        raw = colour_images(per_class, seed=label)
        raw[:grey] = raw[:grey].mean(1, keepdim=True).expand(-1, 3, -1, -1)
        images.append((raw - MEAN) / STD)
        labels.append(torch.full((per_class,), label))
        altered.append(torch.arange(per_class) < grey)
    return torch.cat(images), torch.cat(labels), torch.cat(altered)


def test_style_statistics_have_one_row_per_image_and_are_deterministic() -> None:
    images, _, _ = toy_set()
    features = style_statistics(images)
    assert features.shape == (60, len(STYLE_NAMES)) == (60, 7)
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert torch.isfinite(features).all()
    assert torch.equal(style_statistics(images), features)
    assert torch.allclose(style_statistics(images, batch_size=7), features, atol=1e-6)


def test_grey_images_have_no_chroma_despite_per_channel_normalisation() -> None:
    images, _, altered = toy_set()
    log_chroma = style_statistics(images)[:, STYLE_NAMES.index("log_chroma")]
    # Normalised grey images are not exactly grey (unequal stds) but far less colourful.
    assert log_chroma[altered].max() < log_chroma[~altered].min() - 2


def test_blur_lowers_detail_and_grey_is_one_channel_colourless() -> None:
    images = colour_images(4, seed=3)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
    blurred = torch.nn.functional.avg_pool2d(padded, 3, stride=1)
    detail = STYLE_NAMES.index("log_detail")
    assert (style_statistics(blurred)[:, detail] < style_statistics(images)[:, detail]).all()
    grey = style_statistics(images[:, :1])  # single-channel images: zero colour opponents
    assert torch.isfinite(grey).all() and (grey[:, 1:3] == 0).all()
    assert torch.isfinite(style_statistics(torch.zeros(2, 3, 4, 4))).all()  # flat images


def test_grey_images_form_their_own_cluster_in_every_class() -> None:
    images, labels, altered = toy_set()
    clusterer = KMeansClusterer(k=2, features="style", pool_per_class=None, seed=0)
    groups = clusterer.fit(images, labels, num_classes=2)
    found = rare_group_discovery(groups, labels, altered, groups_per_class=2, num_classes=2)
    assert found == {"cluster/rare_purity": 1.0, "cluster/rare_recall": 1.0}
    assert torch.equal(clusterer.assign(images, labels), groups)


def test_robust_scaling_keeps_a_rare_outlying_group_far_out() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 2, generator=generator)
    features[:10, 0] += 20.0  # 5% far out in dimension 0
    features[:, 1] = 3.0  # a constant dimension
    centre, scale = robust_scaling(features)
    scaled = (features - centre) / scale
    assert scaled[:10, 0].min() > 10  # a z-score would put them about 4.5 out
    assert scale[1] == 1.0 and (scaled[:, 1] == 0).all()


def test_the_scaling_is_fitted_once_and_saved_with_the_clusterer() -> None:
    images, labels, _ = toy_set()
    clusterer = KMeansClusterer(
        k=2, features="style", pool_per_class=None, seed=0, shape="clusters"
    )
    with pytest.raises(ValueError, match="fit first"):
        clusterer.features_of(images)
    groups = clusterer.fit(images, labels, num_classes=2)
    scale = clusterer.feature_scale.clone()
    clusterer.fit(images[::2], labels[::2], num_classes=2)  # a refit on another pool
    assert torch.equal(clusterer.feature_scale, scale)  # one space for the whole run
    state = clusterer.state_dict()
    assert set(state) == {"centroids", "assignments", "feature_centre", "feature_scale"}
    fresh = KMeansClusterer(k=2, features="style", pool_per_class=None, seed=0, shape="clusters")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.assign(images, labels), clusterer.assign(images, labels))
    assert groups.shape == (60,)


def test_an_unknown_feature_space_is_a_one_line_user_error() -> None:
    with pytest.raises(UserError, match="clustering.features must be one of .*style") as error:
        KMeansClusterer(features="styles")
    assert "\n" not in str(error.value)


def test_style_is_chosen_from_the_command_line(tmp_path: Path) -> None:
    overrides = ("clustering=faiss_kmeans", "clustering.features=style", "clustering.k=2")
    cfg = compose_config(*overrides, output_dir=tmp_path)
    clusterer = hydra.utils.instantiate(cfg.clustering)
    images, labels, _ = toy_set()
    clusterer.pool_per_class = None
    assert clusterer.fit(images, labels, num_classes=2).shape == (60,)
