"""Nearest-synthetic grouping: every real image joins the closest synthetic image of its class.

This is the subgrouping of the paper's code: the synthetic images act as cluster centres, so
there are as many groups as synthetic images and a group's risk measures how well its
synthetic image covers the real images around it.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from torch import Tensor

from rdd.clustering.kmeans import _as_faiss_array, _check_features


def _check_labels(labels: Tensor, n: int, name: str) -> Tensor:
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must be (N,) with N={n} to match its features, got {tuple(labels.shape)}"
        )
    if torch.is_floating_point(labels):
        raise ValueError(f"{name} must be integer class labels, got {labels.dtype}")
    return labels.detach().to("cpu", torch.int64)


def nearest_synthetic(
    real_features: Tensor,
    real_labels: Tensor,
    syn_features: Tensor,
    syn_labels: Tensor,
) -> Tensor:
    """Assign every real sample to the nearest (L2) synthetic sample of the same class.

    The search is restricted to the real sample's class: a real image closer to another
    class's synthetic image still joins one of its own, so groups never mix classes.

    Args:
        real_features: Real samples, (N, D).
        real_labels: Their classes, (N,).
        syn_features: Synthetic samples (the group centres), (M, D).
        syn_labels: Their classes, (M,).

    Returns:
        Group of every real sample, (N,) int64 on the CPU: the row index in ``syn_features``
        of its nearest same-class synthetic sample, so group ids lie in [0, M).

    Raises:
        ValueError: On mismatched shapes or dimensions, or if a class of the real samples has
            no synthetic sample.
    """
    _check_features(real_features, "real_features")
    _check_features(syn_features, "syn_features")
    if real_features.shape[1] != syn_features.shape[1]:
        raise ValueError(
            f"real and synthetic features must have the same dimension, got "
            f"{real_features.shape[1]} and {syn_features.shape[1]}: compute both with the "
            f"same feature extractor"
        )
    real_labels = _check_labels(real_labels, real_features.shape[0], "real_labels")
    syn_labels = _check_labels(syn_labels, syn_features.shape[0], "syn_labels")
    real = real_features.detach().to("cpu", torch.float32)
    syn = syn_features.detach().to("cpu", torch.float32)
    groups = torch.empty(real.shape[0], dtype=torch.int64)
    for label in torch.unique(real_labels).tolist():
        candidates = torch.nonzero(syn_labels == label).squeeze(1)
        if candidates.numel() == 0:
            raise ValueError(
                f"class {label} has real samples but no synthetic sample: every class needs "
                f"at least one synthetic image to act as its group centre"
            )
        members = torch.nonzero(real_labels == label).squeeze(1)
        # Exact search over this class's synthetic samples only (one small index per class).
        index = faiss.IndexFlatL2(syn.shape[1])
        index.add(_as_faiss_array(syn[candidates]))
        _, nearest = index.search(_as_faiss_array(real[members]), 1)
        groups[members] = candidates[torch.from_numpy(nearest[:, 0].astype(np.int64))]
    return groups
