"""The test-set partition that subgroup metrics are scored on.

The test set is split once per dataset into ``k`` clusters by FAISS k-means (seeded), and the
result is cached, so that every method, risk and run is scored on the same subgroups. The
clustering works on the raw test images (before any normalisation or ZCA whitening, which
differ between runs), either on their pixels or on the embedding of a fixed network: a
``conf/net`` architecture initialised from the partition seed and never trained, so the
features depend on nothing but the settings. The cache key covers the test images and every
setting, so a changed test set or changed settings build a new partition.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rdd.clustering.features import embed_in_batches
from rdd.clustering.kmeans import faiss_kmeans
from rdd.config.errors import UserError
from rdd.utils.io import load_or_build_tensor, tensor_digest

FEATURES = ("pixels", "net")


def partition_key(test_x: torch.Tensor, k: int, seed: int, features: str, net_id: str = "") -> str:
    """A digest of the test images (N, C, H, W) and every setting."""
    return tensor_digest(test_x, f"{k}/{seed}/{features}/{net_id}/{tuple(test_x.shape)}")


def check_features(features: str) -> None:
    """The feature space of the test partition must be one rdd computes."""
    if features not in FEATURES:
        raise UserError(
            f"unknown eval.partition.features '{features}': choose one of {', '.join(FEATURES)}"
        )


def partition_test_set(
    test_x: torch.Tensor,
    k: int = 10,
    seed: int = 0,
    features: str = "pixels",
    cache_dir: str | None = None,
    make_net: Callable[[], nn.Module] | None = None,
    net_id: str = "",
) -> torch.Tensor:
    """Cluster ids (N,) int64 in [0, k) of the test images, cached under ``cache_dir``.

    Args:
        test_x: (N, C, H, W) raw test images (uint8, or float in [0, 1]).
        k, seed: number of clusters and the k-means (and feature network) seed.
        features: "pixels", or "net": ``make_net()``'s embedding of the images scaled to [0, 1].
        make_net: builds the feature network (``features="net"`` only).
        net_id: names the feature network in the cache key (e.g. its config).

    Raises:
        UserError: k < 1, k larger than the test set, or an unknown feature space.
    """
    check_features(features)
    if not 1 <= k <= len(test_x):
        raise UserError(
            f"eval.partition.k must be in [1, {len(test_x)}] (the test set size), got {k}"
        )
    if features == "net" and make_net is None:
        raise ValueError("features='net' needs make_net, the feature network's factory")
    key = partition_key(test_x, k, seed, features, net_id if features == "net" else "")
    path = Path(cache_dir).expanduser() / f"test-partition-{key}.pt" if cache_dir else None

    def cluster() -> torch.Tensor:
        return faiss_kmeans(partition_features(test_x, features, seed, make_net), k, seed)[1]

    return load_or_build_tensor(path, cluster, lambda groups: groups.shape == (len(test_x),))


def partition_features(
    test_x: torch.Tensor, features: str, seed: int, make_net: Callable[[], nn.Module] | None
) -> torch.Tensor:
    """(N, D) float32 features of the raw test images in the chosen space."""
    pixels = test_x.float() / 255.0 if test_x.dtype == torch.uint8 else test_x.float()
    if features == "pixels":
        return pixels.flatten(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the fixed network: the same weights for every run
        net = make_net()
    return embed_in_batches(net, pixels)
