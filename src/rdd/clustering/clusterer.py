"""Subgroup discovery modules configured by ``conf/clustering/*.yaml``.

A clusterer splits the real images of every class into subgroups, whose risks the risk
measure then combines. It is re-run every ``every`` outer iterations on a pool of at most
``pool_per_class`` real images per class, in one of three feature spaces:

- ``embedding``: the current matching network's ``embed()`` (the groups follow the network);
- ``pixels``: the flattened images;
- ``fixed_net``: ``embed()`` of a network loaded once from the ``feature_net`` file.

Typical use by a distillation loop::

    if clusterer.due(iteration):
        pool = clusterer.pool(real_labels, num_classes, iteration)
        clusterer.fit(real_images[pool], real_labels[pool], num_classes, net=net)
    groups = clusterer.assign(batch_images, batch_labels, net=net)

Results are tensors kept as buffers (``centroids``, ``assignments``), so they are saved in
checkpoints and follow ``.to(device)``; no FAISS object outlives a call. Under
``torch.distributed`` rank 0 clusters and broadcasts its result (as in SwAV), so every rank
uses the same groups even if floating-point differences between ranks would split ties
differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rdd.clustering.kmeans import per_class_kmeans
from rdd.clustering.nearest import nearest_synthetic
from rdd.errors import UserError

FEATURE_SPACES = ("embedding", "pixels", "fixed_net")
# Images per forward pass when computing features: bounds memory on large pools.
FEATURE_BATCH = 512


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"clustering.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_images(images: Tensor, labels: Tensor, name: str = "images") -> None:
    if images.dim() != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"labels of {name} must be (N,) with N={images.shape[0]}, got {tuple(labels.shape)}"
        )


def _broadcast_from_rank0(*tensors: Tensor) -> list[Tensor]:
    """Replace every tensor by rank 0's copy when running distributed; CPU tensors out.

    Every rank must pass tensors of the same shape and dtype.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors)
    # NCCL only moves CUDA tensors; gloo (and the others) take CPU tensors.
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    result = []
    for tensor in tensors:
        buffer = tensor.to(device).contiguous()
        dist.broadcast(buffer, src=0)
        result.append(buffer.cpu())
    return result


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@torch.no_grad()
def embed_in_batches(net: nn.Module, images: Tensor, batch_size: int = FEATURE_BATCH) -> Tensor:
    """``net.embed`` of ``images`` in eval mode, batch by batch, without gradients.

    Args:
        net: A network with ``embed(x) -> (B, D)``; its training flag is restored afterwards.
        images: (N, C, H, W), on any device; batches are moved to the network's device.
        batch_size: Images per forward pass.

    Returns:
        Features (N, D), float32 on the CPU.
    """
    if not callable(getattr(net, "embed", None)):
        raise ValueError(f"{type(net).__name__} has no embed() method to compute features with")
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    was_training = net.training
    # Eval mode: batch norm must use its running statistics, not those of each feature batch.
    net.eval()
    try:
        chunks = [
            net.embed(images[start : start + batch_size].to(device)).flatten(1).float().cpu()
            for start in range(0, images.shape[0], batch_size)
        ]
    finally:
        net.train(was_training)
    if not chunks:
        raise ValueError("cannot compute features of an empty set of images")
    return torch.cat(chunks)


def load_feature_net(
    path: str | Path, channel: int, num_classes: int | None, im_size: tuple[int, int]
) -> nn.Module:
    """Load a fixed feature network saved as ``{"config": ..., "state_dict": ...}``.

    ``config`` is a plain dict net config with ``_target_`` (as in ``conf/net``, e.g. from
    ``OmegaConf.to_container``); the file may also hold ``channel``, ``num_classes`` and
    ``im_size``, which then win over the arguments. The file is read with
    ``weights_only=True``, so it can hold only tensors and plain containers.

    Args:
        path: The torch file.
        channel: Input channels of the images, used unless the file says otherwise.
        num_classes: Logits of the saved classifier, used unless the file says otherwise.
        im_size: Input (H, W), used unless the file says otherwise.

    Returns:
        The network in eval mode, on the CPU.

    Raises:
        UserError: If the file is missing, unreadable, lacks a key, or does not fit the net.
    """
    from rdd.nets import build_net  # the nets package is heavy; clustering on pixels skips it

    path = Path(path)
    if not path.is_file():
        raise UserError(f"clustering.feature_net file {path} does not exist: give a saved net")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds (pickle, zip, EOF) for a bad file
        raise UserError(
            f"clustering.feature_net file {path} cannot be read as a torch file ({error!s:.200})"
        ) from error
    if not isinstance(saved, dict) or not {"config", "state_dict"} <= saved.keys():
        raise UserError(
            f"clustering.feature_net file {path} must hold a dict with 'config' (net config "
            f"with _target_) and 'state_dict'"
        )
    num_classes = saved.get("num_classes", num_classes)
    if num_classes is None:
        raise UserError(
            f"clustering.feature_net file {path} has no 'num_classes': save it in the file"
        )
    try:
        net = build_net(
            saved["config"],
            int(saved.get("channel", channel)),
            int(num_classes),
            tuple(saved.get("im_size", im_size)),
        )
        net.load_state_dict(saved["state_dict"])
    except Exception as error:  # a wrong config or shape: say which file is at fault
        raise UserError(
            f"clustering.feature_net file {path} does not build the saved network ({error!s:.300})"
        ) from error
    return net.eval()


class _Grouping(nn.Module):
    """What every clusterer shares: schedule, pool, feature spaces, result buffers."""

    def __init__(
        self,
        name: str,
        every: int,
        pool_per_class: int | None,
        features: str,
        feature_net: str | None,
        seed: int,
    ) -> None:
        super().__init__()
        self.name = name
        self.every = _check_int("every", every, 1)
        self.pool_per_class = (
            None if pool_per_class is None else _check_int("pool_per_class", pool_per_class, 1)
        )
        if features not in FEATURE_SPACES:
            raise UserError(
                f"clustering.features must be one of {', '.join(FEATURE_SPACES)}, got {features!r}"
            )
        if features == "fixed_net" and not feature_net:
            raise UserError(
                "clustering.features=fixed_net needs clustering.feature_net=<path to a saved net>"
            )
        self.features = features
        self.feature_net = None if feature_net is None else str(feature_net)
        self.seed = int(seed)
        # A plain dict, not a submodule: the fixed net is reloaded from its file, not saved in
        # the clusterer's state_dict.
        self._fixed_cache: dict[tuple, nn.Module] = {}
        # Empty until the first fit; _load_from_state_dict resizes them to a checkpoint's.
        self.register_buffer("centroids", torch.empty(0))
        self.register_buffer("assignments", torch.empty(0, dtype=torch.int64))

    def due(self, iteration: int) -> bool:
        """Whether to (re-)cluster at outer iteration ``iteration``: at 0 and every ``every``."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        return iteration % self.every == 0

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (or a fitted state_dict was loaded)."""
        return self.centroids.numel() > 0

    def pool(self, labels: Tensor, num_classes: int, iteration: int = 0) -> Tensor:
        """Indices of the real images to cluster: ``pool_per_class`` random ones per class.

        The draw depends only on ``seed`` and ``iteration``, so every rank (and a resumed run)
        picks the same pool. Classes with fewer images contribute all of them.

        Args:
            labels: Classes of all real images, (N,).
            num_classes: Number of classes C.
            iteration: Outer iteration; a new pool is drawn at every re-clustering.

        Returns:
            Indices into ``labels`` (P,) int64 on the CPU, grouped by class.
        """
        labels = labels.detach().cpu()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(iteration))
        chosen = []
        for label in range(num_classes):
            members = torch.nonzero(labels == label).squeeze(1)
            if self.pool_per_class is not None and members.numel() > self.pool_per_class:
                order = torch.randperm(members.numel(), generator=generator)
                members = members[order[: self.pool_per_class]].sort().values
            chosen.append(members)
        return torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)

    def features_of(
        self, images: Tensor, net: nn.Module | None = None, num_classes: int | None = None
    ) -> Tensor:
        """Features of ``images`` in the configured space, without gradients.

        Args:
            images: (N, C, H, W).
            net: The current matching network (needed for ``features=embedding``); its
                training flag is restored afterwards.
            num_classes: Classes of the saved classifier, for ``features=fixed_net`` files
                that do not record it.

        Returns:
            Features (N, D), float32 on the CPU (D = C*H*W for pixels).

        Raises:
            ValueError: If ``images`` is not 4-D, or ``features=embedding`` gets no ``net``.
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if self.features == "pixels":
            return images.detach().flatten(1).to("cpu", torch.float32)
        if self.features == "embedding":
            if net is None:
                raise ValueError(
                    "clustering.features=embedding needs the current network: pass net=..., "
                    "or set clustering.features to pixels or fixed_net"
                )
            return embed_in_batches(net, images)
        extractor = self._fixed_net(images.shape[1], num_classes, tuple(images.shape[2:]))
        return embed_in_batches(extractor.to(images.device), images)

    def _fixed_net(
        self, channel: int, num_classes: int | None, im_size: tuple[int, ...]
    ) -> nn.Module:
        key = (channel, num_classes, im_size)
        if key not in self._fixed_cache:
            assert self.feature_net is not None  # checked in __init__
            self._fixed_cache[key] = load_feature_net(
                self.feature_net, channel, num_classes, (im_size[0], im_size[1])
            )
        return self._fixed_cache[key]

    def _store(self, **results: Tensor) -> None:
        # Replace, not copy into: the shapes change from fit to fit. Keep the module's device.
        for name, value in results.items():
            setattr(self, name, value.to(getattr(self, name).device))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The buffers' shapes are only known after a fit; resize them to the checkpoint's so
        # that a fresh clusterer can load a fitted one.
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and isinstance(saved, Tensor) and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty_like(saved, device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, every={self.every}, features={self.features!r}"


class Clusterer(_Grouping):
    """Per-class FAISS k-means: ``k`` subgroups per class, group id ``class * k + cluster``.

    Args:
        name: Config name (``faiss_kmeans``).
        k: Clusters per class.
        every: Re-cluster every ``every`` outer iterations (and at iteration 0).
        pool_per_class: Real images per class in the clustered pool; None: all of them.
        features: ``embedding``, ``pixels`` or ``fixed_net``.
        feature_net: Path of the saved network for ``features=fixed_net``.
        niter: k-means iterations.
        nredo: k-means restarts (the best objective is kept).
        spherical: Spherical k-means on L2-normalised features.
        min_points_per_centroid: FAISS warns below ``k`` times this many points per class.
        max_points_per_centroid: FAISS subsamples above ``k`` times this many; None: never.
        seed: Seeds the pool draws and the k-means of every class.

    Buffers:
        centroids: (C, k, D) after :meth:`fit`.
        assignments: (P,) group of every pooled image after :meth:`fit`.
    """

    def __init__(
        self,
        name: str = "faiss_kmeans",
        k: int = 3,
        every: int = 50,
        pool_per_class: int | None = 256,
        features: str = "embedding",
        feature_net: str | None = None,
        niter: int = 20,
        nredo: int = 1,
        spherical: bool = False,
        min_points_per_centroid: int = 1,
        max_points_per_centroid: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(name, every, pool_per_class, features, feature_net, seed)
        self.k = _check_int("k", k, 1)
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

    def num_groups(self, num_classes: int, ipc: int | None = None) -> int:
        """Number of groups, ``num_classes * k`` (``ipc`` is ignored; see the other clusterer)."""
        return num_classes * self.k

    def fit(
        self, images: Tensor, labels: Tensor, num_classes: int, net: nn.Module | None = None
    ) -> Tensor:
        """Cluster every class of ``images`` and store ``centroids`` and ``assignments``.

        Args:
            images: The pooled real images, (N, C, H, W).
            labels: Their classes, (N,) in [0, num_classes).
            num_classes: Number of classes C; every class needs at least ``k`` images.
            net: The current matching network, for ``features=embedding``.

        Returns:
            Group of every image, (N,) int64 in [0, C * k), on ``labels``' device.

        Raises:
            ValueError: On bad shapes, or a class with fewer than ``k`` images.
        """
        _check_images(images, labels)
        features = self.features_of(images, net, num_classes)
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
        centroids, groups = _broadcast_from_rank0(centroids, groups)
        self._store(centroids=centroids, assignments=groups)
        return groups.to(labels.device)

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
        if not self.fitted:
            raise ValueError("the clusterer has no centroids yet: call fit() first")
        _check_images(images, labels)
        features = self.features_of(images, net, num_classes)
        if self.spherical:  # the centroids were fitted on normalised features
            features = nn.functional.normalize(features, dim=1)
        num_centroid_classes, k, dim = self.centroids.shape
        centre_labels = torch.arange(num_centroid_classes).repeat_interleave(k)
        groups = nearest_synthetic(
            features, labels, self.centroids.reshape(-1, dim).cpu(), centre_labels
        )
        return groups.to(labels.device)


class NearestSyntheticClusterer(_Grouping):
    """Groups around the synthetic images: every real image joins its class's nearest one.

    There is one group per synthetic image, with id its index in the synthetic set.

    Args:
        name: Config name (``nearest_synthetic``).
        every: Re-group every ``every`` outer iterations (and at iteration 0).
        pool_per_class: Real images per class in the grouped pool; None: all of them.
        features: ``embedding``, ``pixels`` or ``fixed_net``.
        feature_net: Path of the saved network for ``features=fixed_net``.
        seed: Seeds the pool draws.

    Buffers:
        centroids: (M, D) features of the synthetic images after :meth:`fit`.
        centroid_labels: (M,) their classes.
        assignments: (P,) group of every pooled real image after :meth:`fit`.
    """

    # Marks a grouper whose fit() needs the synthetic set (rdd.learner tests for it).
    nearest: ClassVar[bool] = True

    def __init__(
        self,
        name: str = "nearest_synthetic",
        every: int = 50,
        pool_per_class: int | None = 256,
        features: str = "embedding",
        feature_net: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(name, every, pool_per_class, features, feature_net, seed)
        self.register_buffer("centroid_labels", torch.empty(0, dtype=torch.int64))

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
        real = self.features_of(images, net, num_classes)
        syn = self.features_of(syn_images, net, num_classes)
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
        features = self.features_of(images, net, num_classes)
        groups = nearest_synthetic(
            features, labels, self.centroids.cpu(), self.centroid_labels.cpu()
        )
        return groups.to(labels.device)
