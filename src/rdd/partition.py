"""The test-set partition that subgroup metrics are scored on.

The test set is split once per dataset into ``k`` clusters by FAISS k-means (seeded) in pixel
space, and the result is cached, so that every method, risk and run is scored on the same
subgroups. The cache key covers the test images themselves and the settings, so a changed
test set or changed settings build a new partition.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from rdd.clustering.kmeans import faiss_kmeans
from rdd.errors import UserError
from rdd.io import atomic_write

log = logging.getLogger(__name__)
FEATURES = ("pixels",)


def partition_key(test_x: torch.Tensor, k: int, seed: int, features: str) -> str:
    """A digest of the test images and the settings: (N, C, H, W) float or uint8 tensor."""
    digest = hashlib.sha1(f"{k}/{seed}/{features}/{tuple(test_x.shape)}".encode())
    digest.update(test_x.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def partition_test_set(
    test_x: torch.Tensor,
    k: int = 10,
    seed: int = 0,
    features: str = "pixels",
    cache_dir: str | None = None,
) -> torch.Tensor:
    """Cluster ids (N,) int64 in [0, k) of the test images (N, C, H, W), cached under ``cache_dir``.

    Raises:
        UserError: k < 1, k larger than the test set, or an unknown feature space.
    """
    if features not in FEATURES:
        raise UserError(
            f"unknown eval.partition.features '{features}': choose one of {', '.join(FEATURES)}"
        )
    if not 1 <= k <= len(test_x):
        raise UserError(
            f"eval.partition.k must be in [1, {len(test_x)}] (the test set size), got {k}"
        )
    key = partition_key(test_x, k, seed, features)
    path = Path(cache_dir).expanduser() / f"test-partition-{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            groups = torch.load(path, weights_only=True)
            if isinstance(groups, torch.Tensor) and groups.shape == (len(test_x),):
                return groups
        except Exception as err:  # a damaged cache file is rebuilt, never fatal
            log.warning("rebuilding the test partition cache %s (%s)", path, err)
    _, groups = faiss_kmeans(test_x.flatten(1).float(), k, seed)
    if path is not None:
        atomic_write(path, lambda tmp: torch.save(groups, tmp))
    return groups
