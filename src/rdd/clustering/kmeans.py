"""k-means with FAISS, globally and within every class.

Results are plain tensors; the FAISS objects live only for the duration of a call, so callers
can keep centroids and assignments as buffers (saved with checkpoints, moved with ``.to``).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import torch
from torch import Tensor

# FAISS seeds are C ints; derived per-class seeds are folded into [0, 2**31).
_SEED_MODULUS = 2**31


def _as_faiss_array(features: Tensor) -> np.ndarray:
    """(N, D) tensor -> C-contiguous float32 numpy array on the CPU, as FAISS requires."""
    array = features.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(array)


def _check_features(features: Tensor, name: str = "features") -> None:
    if features.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) tensor, got shape {tuple(features.shape)}")
    if not torch.is_floating_point(features):
        raise ValueError(f"{name} must be a floating-point tensor, got {features.dtype}")
    if features.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature dimension (D >= 1)")


def _check_options(k: int, niter: int, nredo: int, min_points: int, max_points: int | None) -> None:
    if k < 1:
        raise ValueError(f"k (clusters) must be >= 1, got {k}")
    if niter < 1:
        raise ValueError(f"niter (k-means iterations) must be >= 1, got {niter}")
    if nredo < 1:
        raise ValueError(f"nredo (k-means restarts) must be >= 1, got {nredo}")
    if min_points < 0:
        raise ValueError(f"min_points_per_centroid must be >= 0, got {min_points}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"max_points_per_centroid must be >= 1 or None, got {max_points}")


def faiss_kmeans(
    features: Tensor,
    k: int,
    seed: int,
    niter: int = 20,
    nredo: int = 1,
    spherical: bool = False,
    min_points_per_centroid: int = 1,
    max_points_per_centroid: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Cluster ``features`` into ``k`` groups with FAISS k-means on the CPU.

    The result depends only on the inputs and ``seed`` (FAISS draws its initial centroids and
    any subsample from ``seed``).

    Args:
        features: Points to cluster, (N, D), any float dtype and device.
        k: Number of clusters, 1 <= k <= N.
        seed: Seed of FAISS's random draws.
        niter: Lloyd iterations per run.
        nredo: Independent runs; the one with the lowest objective is kept.
        spherical: Spherical k-means: the features are L2-normalised first and the centroids
            are kept on the unit sphere (points are then assigned by inner product, which on
            the sphere ranks centroids exactly like the L2 distance).
        min_points_per_centroid: FAISS only warns below ``k * min_points_per_centroid`` points;
            the default 1 keeps small per-class pools quiet.
        max_points_per_centroid: FAISS trains on a seeded subsample of
            ``k * max_points_per_centroid`` points when N is larger; None uses every point.

    Returns:
        ``(centroids, assignments)``: centroids (k, D) float32 and the index of every point's
        nearest centroid (N,) int64, both on the CPU.

    Raises:
        ValueError: If the features are not (N, D) floats, if ``k`` is < 1 or larger than N,
            or if another option is out of range.
    """
    _check_features(features)
    _check_options(k, niter, nredo, min_points_per_centroid, max_points_per_centroid)
    n, dim = features.shape
    if k > n:
        raise ValueError(f"cannot make k={k} clusters from {n} points: use k <= {n}")
    x = features.detach().to("cpu", torch.float32)
    if spherical:
        x = torch.nn.functional.normalize(x, dim=1)
    x = _as_faiss_array(x)
    if max_points_per_centroid is None:
        # FAISS subsamples only when n > k * max_points_per_centroid, so n never subsamples.
        max_points_per_centroid = n
    kmeans = faiss.Kmeans(
        dim,
        k,
        niter=niter,
        nredo=nredo,
        spherical=spherical,
        seed=int(seed) % _SEED_MODULUS,
        min_points_per_centroid=min_points_per_centroid,
        max_points_per_centroid=max_points_per_centroid,
        verbose=False,
    )
    kmeans.train(x)
    # Assign with the index FAISS trained (L2, or inner product when spherical) so that the
    # assignments are those of the final centroids, not of the last training iteration.
    _, nearest = kmeans.index.search(x, 1)
    centroids = torch.from_numpy(np.array(kmeans.centroids, dtype=np.float32, copy=True))
    assignments = torch.from_numpy(nearest[:, 0].astype(np.int64))
    return centroids.reshape(k, dim), assignments


def class_seed(seed: int, label: int) -> int:
    """Seed of class ``label``'s k-means: distinct per class, fixed for a run seed."""
    return (int(seed) * 1000 + int(label)) % _SEED_MODULUS


def per_class_kmeans(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    k: int,
    seed: int,
    **opts: Any,
) -> tuple[Tensor, Tensor]:
    """Cluster every class separately into ``k`` subgroups.

    Args:
        features: Points, (N, D).
        labels: Class of every point, (N,) integers in [0, num_classes).
        num_classes: Number of classes C; every class needs at least ``k`` points.
        k: Clusters per class.
        seed: Run seed; class ``c`` clusters with :func:`class_seed` ``(seed, c)``.
        **opts: Passed on to :func:`faiss_kmeans` (niter, nredo, spherical, ...).

    Returns:
        ``(centroids, groups)``: centroids (C, k, D) float32, and every point's group (N,)
        int64, ``class * k + cluster``, in [0, C * k); both on the CPU.

    Raises:
        ValueError: On a shape mismatch, a label outside [0, num_classes), or a class with
            fewer than ``k`` points (the message names the class and its size).
    """
    _check_features(features)
    if k < 1:
        raise ValueError(f"k (clusters per class) must be >= 1, got {k}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N={features.shape[0]} to match the features, "
            f"got shape {tuple(labels.shape)}"
        )
    labels = labels.detach().to("cpu", torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    counts = torch.bincount(labels, minlength=num_classes)
    for label in range(num_classes):
        if counts[label] < k:
            raise ValueError(
                f"class {label} has {int(counts[label])} points, fewer than k={k} clusters: "
                f"lower k or give every class at least {k} points"
            )
    features = features.detach().to("cpu", torch.float32)
    centroids = torch.empty(num_classes, k, features.shape[1])
    groups = torch.empty(features.shape[0], dtype=torch.int64)
    for label in range(num_classes):
        members = torch.nonzero(labels == label).squeeze(1)
        class_centroids, assignments = faiss_kmeans(
            features[members], k, class_seed(seed, label), **opts
        )
        centroids[label] = class_centroids
        groups[members] = label * k + assignments
    return centroids, groups
