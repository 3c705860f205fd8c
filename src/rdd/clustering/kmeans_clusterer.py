"""clustering=faiss_kmeans: per-class FAISS k-means subgroups (:class:`KMeansClusterer`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rdd.clustering.base import (
    Grouping,
    _broadcast_from_rank0,
    _check_images,
    _check_int,
    _is_rank0,
)
from rdd.clustering.features import LOSS_SCALE_FLOOR
from rdd.clustering.kmeans import per_class_kmeans
from rdd.clustering.matching import match_clusters, renumber
from rdd.clustering.nearest import nearest_synthetic
from rdd.clustering.separation import RARE_PICKS, rare_cluster_separation, rare_clusters
from rdd.config.errors import UserError

# clustering.shape: the k clusters of a class; its smallest cluster and the rest merged; or
# the second where the classes' smallest clusters stand apart (rdd.clustering.separation).
SHAPES = ("clusters", "rare_vs_rest", "auto")


class KMeansClusterer(Grouping):
    """Per-class FAISS k-means: ``k`` subgroups per class, group id ``class * k + cluster``.

    A refit renumbers its clusters after the previous fit's (Hungarian matching of every
    class's centroids, :mod:`rdd.clustering.matching`), so ids stay meaningful across refits;
    exact in a fixed space (pixels, fixed_net, style, style_error), approximate for ``embedding``, whose
    network changes between fits.

    Args:
        name: Config name (``faiss_kmeans``).
        k: Clusters per class.
        every: Re-cluster every ``every`` outer iterations (and at iteration 0); None (the
            default): once, at iteration 0, since the default space (style_error) is fixed for the
            run. With ``features=embedding`` set it, to follow the matching networks.
        pool_per_class: Real images per class in the clustered pool; None: all of them.
        features: ``style_error`` (the default: seven low-level style statistics, which find
            grey and blurred images, plus the loss of a linear probe of the class, which finds
            images the class's majority does not explain, such as inverted ones; its scale is
            at least ``loss_floor``, so a near-perfect probe's few misfits do not dominate the
            clusters; benchmarks/subgroup_shift/README.md, sections 15-16), ``style`` (the
            statistics alone), ``embedding``, ``pixels`` or ``fixed_net``.
        feature_net: Path of the saved network for ``features=fixed_net``.
        niter: k-means iterations.
        nredo: k-means restarts (the best objective is kept).
        spherical: Spherical k-means on L2-normalised features.
        min_points_per_centroid: FAISS warns below ``k`` times this many points per class.
        max_points_per_centroid: FAISS subsamples above ``k`` times this many; None: never.
        seed: Seeds the pool draws and the k-means of every class.
        shape: The groups made of the clusters. ``clusters``: the k clusters of every class.
            ``rare_vs_rest``: two groups per class, its smallest cluster (in the fitted pool)
            and the other k - 1 merged, as ``clustering=known`` has the altered images and
            the rest, so the risk weighs the candidate rare group against the class, not
            against the majority's own clusters. ``auto`` (the default): ``rare_vs_rest``
            where the smallest clusters stand apart, their silhouette's excess over their
            class's mean silhouette, averaged over the classes, at least ``apart``
            (:mod:`rdd.clustering.separation`), else ``clusters``; decided at the first fit
            and kept, so the number of groups never changes within a run. With k <= 2 all
            three are alike.
        apart: The excess silhouette at which ``auto`` merges. 0.07: in the style space it is
            0.08-0.52 where 2-10 % of every class is grey or blurred (CIFAR-10) or inverted
            or blurred (digits), and -0.05 to 0.06 without a rare subgroup, with inverted
            CIFAR-10 images (whose smallest cluster is not the inverted one) or with a 20 %
            group (benchmarks/subgroup_shift/shape*.txt). In the default ``style_error``
            space the two sides overlap a little: 0.02-0.53 and -0.09 to 0.08, 4 of 284
            fits on the wrong side, each keeping k clusters of which one holds the rare
            group at 79-100 % purity (shape_floor*.txt, README section 16).
        loss_floor: The least scale, in nats, of ``style_error``'s loss column (its MAD-sigma
            otherwise). ln 2 (one bit): a probe that classifies nearly every image (digits)
            has a loss MAD of hundredths of a nat, and unfloored its few misfits make a "rare
            group" where there is none (30 of 140 of ``auto``'s decisions wrong in
            benchmarks/subgroup_shift/shape_error_other.txt; 2 of 200 digits fits with the
            floor, section 16). On CIFAR-10 the loss's spread is wider and the floor does not
            bind. 0 scales by the MAD alone, which also isolates a subgroup only ~2 nats out
            where the probe is near-perfect; 1 (one nat) was measured too (section 16).
        rare_pick: Which cluster of a class is its candidate rare group, for the merging
            shapes and ``auto``'s silhouette (:func:`rdd.clustering.separation.rare_cluster`).
            ``smallest`` (the default): the smallest. ``apart``: of the clusters under
            ``rare_limit`` of the class, the one whose points' mean silhouette is highest.
        rare_limit: ``apart``'s largest candidate, as a share of the class's pooled images.

    Buffers:
        centroids: (C, k, D) after :meth:`fit`.
        assignments: (P,) group of every pooled image after :meth:`fit`.
        merged_ids: (C * k,) with ``rare_vs_rest`` or ``auto``, the group of every cluster.
        separation: () with ``auto``, the first fit's mean excess silhouette (NaN before it).
    """

    def __init__(
        self,
        name: str = "faiss_kmeans",
        k: int = 5,
        every: int | None = None,
        pool_per_class: int | None = 256,
        features: str = "style_error",
        feature_net: str | None = None,
        niter: int = 20,
        nredo: int = 1,
        spherical: bool = False,
        min_points_per_centroid: int = 1,
        max_points_per_centroid: int | None = None,
        seed: int = 0,
        shape: str = "auto",
        apart: float = 0.07,
        loss_floor: float = LOSS_SCALE_FLOOR,
        rare_pick: str = "smallest",
        rare_limit: float = 0.15,
    ) -> None:
        super().__init__(name, every, pool_per_class, features, feature_net, seed, loss_floor)
        self.k = _check_int("k", k, 1)
        self.shape, self.apart = _check_shape(shape, apart, self.k)
        self.rare_pick, self.rare_limit = _check_rare_pick(rare_pick, rare_limit)
        # merged_ids only for the merging shapes: a plain clusterer's state is as it was.
        if self.shape != "clusters":
            self.register_buffer("merged_ids", torch.empty(0, dtype=torch.int64))
        if self.shape == "auto":
            self.register_buffer("separation", torch.tensor(float("nan"), dtype=torch.float64))
        if self.pool_per_class is not None and self.pool_per_class < self.k:
            raise UserError(
                f"clustering.pool_per_class={self.pool_per_class} is smaller than "
                f"clustering.k={self.k}: every class needs at least k pooled images"
            )
        self.niter = _check_int("niter", niter, 1)
        self.nredo = _check_int("nredo", nredo, 1)
        self.spherical = bool(spherical)
        self.min_points_per_centroid = _check_int(
            "min_points_per_centroid", min_points_per_centroid, 0
        )
        self.max_points_per_centroid = (
            None
            if max_points_per_centroid is None
            else _check_int("max_points_per_centroid", max_points_per_centroid, 1)
        )

    @property
    def rare_vs_rest(self) -> bool:
        """Whether each class's groups are its smallest cluster and the rest (``shape``)."""
        if self.shape == "auto":
            if torch.isnan(self.separation):
                raise ValueError("clustering.shape=auto decides at the first fit: call fit() first")
            return self.k > 2 and float(self.separation) >= self.apart
        return self.shape == "rare_vs_rest"

    def num_groups(self, num_classes: int, ipc: int | None = None) -> int:
        """Number of groups, ``num_classes * k`` (2 per class with ``rare_vs_rest``; ``ipc``
        is ignored, see the other clusterer)."""
        return num_classes * (2 if self.rare_vs_rest else self.k)

    def fit_stats(self) -> dict[str, float]:
        """What ``shape=auto`` decided on, for the run's log."""
        if self.shape != "auto":
            return {}
        return {
            "cluster/separation": float(self.separation),
            "cluster/merged": float(self.rare_vs_rest),
        }

    def fit(
        self,
        images: Tensor,
        labels: Tensor,
        num_classes: int,
        net: nn.Module | None = None,
        syn_images: Tensor | None = None,
        syn_labels: Tensor | None = None,
    ) -> Tensor:
        """Cluster every class of ``images`` and store ``centroids`` and ``assignments``.

        Args:
            images: The pooled real images, (N, C, H, W).
            labels: Their classes, (N,) in [0, num_classes).
            num_classes: Number of classes C; every class needs at least ``k`` images.
            net: The current matching network, for ``features=embedding``.
            syn_images, syn_labels: The synthetic set; unused (k-means needs no centres; the
                arguments make both clusterers' ``fit`` alike).

        Returns:
            Group of every image, (N,) int64 in [0, num_groups), on ``labels``' device.

        Raises:
            ValueError: On bad shapes, or a class with fewer than ``k`` images.
        """
        _check_images(images, labels)
        features = self.fit_features(images, net, num_classes, labels)
        centroids = torch.zeros(num_classes, self.k, features.shape[1])
        groups = torch.zeros(features.shape[0], dtype=torch.int64)
        if _is_rank0():
            centroids, groups = per_class_kmeans(
                features,
                labels,
                num_classes,
                self.k,
                self.seed,
                niter=self.niter,
                nredo=self.nredo,
                spherical=self.spherical,
                min_points_per_centroid=self.min_points_per_centroid,
                max_points_per_centroid=self.max_points_per_centroid,
            )
            centroids, groups = self._keep_ids(centroids, groups)
        centroids, groups = _broadcast_from_rank0(centroids, groups)
        self._store(centroids=centroids, assignments=groups)
        if self.spherical:  # the clusters were fitted on normalised features
            features = nn.functional.normalize(features, dim=1)
        if self.shape == "auto" and torch.isnan(self.separation):
            self._decide_shape(features, labels, groups)
        if self.shape != "clusters":
            self._store(merged_ids=self._merged_ids(features, labels, groups, num_classes))
        return self._merged(groups).to(labels.device)

    def _decide_shape(self, features: Tensor, labels: Tensor, groups: Tensor) -> None:
        """``shape=auto``: the first fit's mean excess silhouette of the classes' candidate
        rare clusters (``rare_pick``), on rank 0 (as the clusters) and kept for the run."""
        separation = torch.zeros((), dtype=torch.float64)
        if _is_rank0() and self.k > 2:
            excess = rare_cluster_separation(
                features.cpu(), labels.cpu(), groups, self.k, self.rare_pick, self.rare_limit
            )
            separation.fill_(excess)
        (separation,) = _broadcast_from_rank0(separation)
        self._store(separation=separation)

    def _merged_ids(
        self, features: Tensor, labels: Tensor, clusters: Tensor, num_classes: int
    ) -> Tensor:
        """The group of every cluster: each class's ``rare_pick`` cluster against the rest
        (:func:`rare_vs_rest_ids`), or itself. Picked on rank 0, as the clusters."""
        if not self.rare_vs_rest:
            return torch.arange(num_classes * self.k)
        picked = torch.zeros(num_classes, dtype=torch.int64)
        if _is_rank0():
            rule = (self.k, self.rare_pick, self.rare_limit)
            picked = rare_clusters(features.cpu(), labels.cpu(), clusters, num_classes, *rule)
        (picked,) = _broadcast_from_rank0(picked)
        return rare_vs_rest_ids(picked, self.k)

    def _merged(self, clusters: Tensor) -> Tensor:
        """The groups of ``clusters`` (ids in [0, C * k)): themselves, or with ``shape``
        ``rare_vs_rest`` or ``auto`` the merged ids of the last fit."""
        return clusters if self.shape == "clusters" else self.merged_ids.cpu()[clusters.cpu()]

    def _keep_ids(self, centroids: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        """Renumber a refit's clusters after the previous fit's (rdd.clustering.matching), so
        that a group id keeps naming the same subgroup; the first fit keeps FAISS's order."""
        if not self.fitted or self.centroids.shape != centroids.shape:
            return centroids, groups
        new_id = match_clusters(self.centroids.cpu(), centroids)
        return renumber(centroids, groups, new_id)

    def assign(
        self,
        images: Tensor,
        labels: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> Tensor:
        """Group of new images: the nearest stored centroid of their own class.

        Args:
            images: Real images, (N, C, H, W), in the feature space of the last :meth:`fit`.
            labels: Their classes, (N,).
            net: The current matching network, for ``features=embedding``.
            num_classes: For ``features=fixed_net`` files that do not record it.

        Returns:
            Groups (N,) int64 in [0, C * k), on ``labels``' device.
        """
        return self.assign_with_margins(images, labels, net, num_classes)[0]

    def assign_with_margins(
        self,
        images: Tensor,
        labels: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`assign`'s groups, and how deep inside its group each image lies
        (:func:`group_margins`: (N,) float32 on the CPU, larger is more confidently
        assigned), from one feature pass."""
        if not self.fitted:
            raise ValueError("the clusterer has no centroids yet: call fit() first")
        _check_images(images, labels)
        features = self.features_of(images, net, num_classes, labels)
        if self.spherical:  # the centroids were fitted on normalised features
            features = nn.functional.normalize(features, dim=1)
        num_centroid_classes, k, dim = self.centroids.shape
        centroids = self.centroids.cpu()
        centre_labels = torch.arange(num_centroid_classes).repeat_interleave(k)
        clusters = nearest_synthetic(features, labels, centroids.reshape(-1, dim), centre_labels)
        groups = self._merged(clusters)
        centroid_groups = self._merged(torch.arange(num_centroid_classes * k))
        margins = group_margins(features, labels.cpu(), groups, centroids, centroid_groups)
        return groups.to(labels.device), margins


def group_margins(
    features: Tensor, labels: Tensor, groups: Tensor, centroids: Tensor, centroid_groups: Tensor
) -> Tensor:
    """How deep inside its group every point lies: the distance to the nearest centroid of its
    class that belongs to another group minus the distance to the nearest of its own group's.

    A point far from every other group's centroid is a typical member; one near the boundary
    may belong to either (a low-chroma colour image beside the grey ones). 0 where the class
    has one group.

    Args:
        features: (N, D) points.
        labels: (N,) their classes.
        groups: (N,) their groups (ids as ``centroid_groups``).
        centroids: (C, k, D) every class's centroids.
        centroid_groups: (C * k,) the group of every centroid, class-major.

    Returns:
        (N,) float32 margins on the CPU, >= 0 for points assigned to their nearest centroid.
    """
    k = centroids.shape[1]
    margins = torch.zeros(len(labels), dtype=torch.float32)
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        distances = torch.cdist(features[members].double(), centroids[c].double())  # (n, k)
        same = centroid_groups[c * k : (c + 1) * k][None, :] == groups[members][:, None]
        inside = distances.masked_fill(~same, float("inf")).amin(1)
        outside = distances.masked_fill(same, float("inf")).amin(1)
        margin = torch.where(torch.isinf(outside), torch.zeros_like(inside), outside - inside)
        margins[members] = margin.float()
    return margins


def rare_vs_rest_ids(picked: Tensor, k: int) -> Tensor:
    """The group of each of the C * k clusters: class c's cluster ``picked[c]`` (local id) is
    group 2c, its other clusters group 2c + 1."""
    num_classes = len(picked)
    ids = (2 * torch.arange(num_classes)).repeat_interleave(k) + 1
    ids[torch.arange(num_classes) * k + picked.cpu()] -= 1
    return ids


def _check_rare_pick(pick: str, limit: float) -> tuple[str, float]:
    """``clustering.rare_pick`` and ``clustering.rare_limit``, or a UserError naming the key."""
    if pick not in RARE_PICKS:
        raise UserError(
            f"clustering.rare_pick must be one of {', '.join(RARE_PICKS)}, got {pick!r}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit <= 1:
        raise UserError(
            f"clustering.rare_limit must be a share of a class in (0, 1] (0.15 by default), "
            f"got {limit!r}"
        )
    return pick, float(limit)


def _check_shape(shape: str, apart: float, k: int) -> tuple[str, float]:
    """``clustering.shape`` and ``clustering.apart``, or a UserError naming the key."""
    if shape not in SHAPES:
        raise UserError(f"clustering.shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if shape == "rare_vs_rest" and k < 2:
        raise UserError(
            "clustering.shape=rare_vs_rest needs clustering.k >= 2 (a smallest cluster and the "
            "rest)"
        )
    if not -2 <= apart <= 2:
        raise UserError(
            f"clustering.apart must be a difference of silhouettes, in [-2, 2] (0.07 by "
            f"default), got {apart}"
        )
    return shape, float(apart)
