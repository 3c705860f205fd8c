"""Nearest-synthetic grouping: every real image joins the closest synthetic image of its class.

This is the subgrouping of the paper's code: the synthetic images act as cluster centres, so
there are as many groups as synthetic images and a group's risk measures how well its
synthetic image covers the real images around it. :func:`nearest_synthetic` does the
assignment; :class:`NearestSyntheticClusterer` is the clusterer module built on it
(``conf/clustering/nearest_synthetic.yaml``).
"""

from __future__ import annotations

from typing import ClassVar

import faiss
import numpy as np
import torch
from torch import Tensor, nn

from rdd.clustering.base import Grouping, _broadcast_from_rank0, _check_images, _is_rank0
from rdd.clustering.features import LOSS_SCALE_FLOOR
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


class NearestSyntheticClusterer(Grouping):
    """Groups around the synthetic images: every real image joins its class's nearest one.

    There is one group per synthetic image, with id its index in the synthetic set.

    Args:
        name: Config name (``nearest_synthetic``).
        every: Re-group every ``every`` outer iterations (and at iteration 0).
        pool_per_class: Real images per class in the grouped pool; None: all of them.
        features: ``embedding``, ``pixels``, ``fixed_net``, ``style`` or ``style_error``.
        feature_net: Path of the saved network for ``features=fixed_net``.
        seed: Seeds the pool draws.
        loss_floor: The least scale of ``style_error``'s loss column, in nats
            (:class:`~rdd.clustering.KMeansClusterer`).

    Buffers:
        centroids: (M, D) features of the synthetic images after :meth:`fit`.
        centroid_labels: (M,) their classes.
        assignments: (P,) group of every pooled real image after :meth:`fit`.
    """

    # Marks a grouper whose fit() needs the synthetic set (rdd.distill.learner tests for it).
    nearest: ClassVar[bool] = True

    def __init__(
        self,
        name: str = "nearest_synthetic",
        every: int = 50,
        pool_per_class: int | None = 256,
        features: str = "embedding",
        feature_net: str | None = None,
        seed: int = 0,
        loss_floor: float = LOSS_SCALE_FLOOR,
    ) -> None:
        super().__init__(name, every, pool_per_class, features, feature_net, seed, loss_floor)
        self.register_buffer("centroid_labels", torch.empty(0, dtype=torch.int64))

    @property
    def ids_persist(self) -> bool:
        """Always: group i is the real images nearest synthetic image i, fit after fit."""
        return True

    def num_groups(self, num_classes: int, ipc: int | None = None) -> int:
        """Number of groups: the synthetic set's size, ``num_classes * ipc``.

        Without ``ipc`` the size of the last fitted synthetic set is used.
        """
        if ipc is not None:
            return num_classes * ipc
        if not self.fitted:
            raise ValueError("nearest_synthetic has one group per synthetic image: pass ipc")
        return int(self.centroids.shape[0])

    def fit(
        self,
        images: Tensor,
        labels: Tensor,
        num_classes: int,
        net: nn.Module | None = None,
        syn_images: Tensor | None = None,
        syn_labels: Tensor | None = None,
    ) -> Tensor:
        """Assign every real image to the nearest same-class synthetic image.

        Args:
            images: The pooled real images, (N, C, H, W).
            labels: Their classes, (N,) in [0, num_classes).
            num_classes: Number of classes C; each needs a synthetic image.
            net: The current matching network, for ``features=embedding``.
            syn_images: The synthetic images, (M, C, H, W).
            syn_labels: Their classes, (M,).

        Returns:
            Group of every real image, (N,) int64 in [0, M), on ``labels``' device.

        Raises:
            ValueError: If the synthetic set is missing, or a class has no synthetic image.
        """
        if syn_images is None or syn_labels is None:
            raise ValueError(
                "nearest_synthetic needs the synthetic set: pass syn_images, syn_labels"
            )
        _check_images(images, labels)
        _check_images(syn_images, syn_labels, "syn_images")
        counts = torch.bincount(syn_labels.detach().cpu().long(), minlength=num_classes)
        missing = [label for label in range(num_classes) if counts[label] == 0]
        if missing:
            raise ValueError(
                f"classes {missing} have no synthetic image: nearest_synthetic needs at least "
                f"one per class"
            )
        real = self.fit_features(images, net, num_classes, labels)
        syn = self.features_of(syn_images, net, num_classes, syn_labels)
        syn_labels = syn_labels.detach().to("cpu", torch.int64)
        groups = torch.zeros(real.shape[0], dtype=torch.int64)
        if _is_rank0():
            groups = nearest_synthetic(real, labels, syn, syn_labels)
        (groups,) = _broadcast_from_rank0(groups)
        self._store(centroids=syn, centroid_labels=syn_labels, assignments=groups)
        return groups.to(labels.device)

    def assign(
        self,
        images: Tensor,
        labels: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> Tensor:
        """Group of new real images against the synthetic features of the last :meth:`fit`.

        Returns:
            Groups (N,) int64 in [0, M), on ``labels``' device.
        """
        if not self.fitted:
            raise ValueError("the clusterer has no synthetic features yet: call fit() first")
        _check_images(images, labels)
        features = self.features_of(images, net, num_classes, labels)
        groups = nearest_synthetic(
            features, labels, self.centroids.cpu(), self.centroid_labels.cpu()
        )
        return groups.to(labels.device)
