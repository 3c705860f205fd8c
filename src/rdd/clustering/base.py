"""What every clusterer shares: argument checks, rank-0 broadcast, the ``Grouping`` base.

A clusterer splits the real images of every class into subgroups, whose risks the risk
measure then combines. It is re-run every ``every`` outer iterations on a pool of at most
``pool_per_class`` real images per class, in one of these feature spaces:

- ``embedding``: the current matching network's ``embed()`` (the groups follow the network);
- ``pixels``: the flattened images;
- ``fixed_net``: ``embed()`` of a network loaded once from the ``feature_net`` file;
- ``style``: seven low-level statistics of every image (colour cast, contrast, chroma, detail,
  layout; :func:`rdd.clustering.features.style_statistics`), robustly standardised with the
  median and MAD of the first pool fitted, then kept for the run (so a refit clusters in the
  same space). No network: a rare rendering (grey, inverted, blurred images) stands out there;
- ``style_error``: the style statistics plus an eighth column, the cross-entropy of each image's
  own class under a linear probe on 4x4 thumbnails fitted on the first pool
  (:func:`rdd.clustering.features.fit_linear_probe`): the error-set signal of JTT-style group
  discovery from a model too simple to memorise a rare subgroup. It finds images that no
  style statistic sets apart but that the class's majority does not explain (inverted ones).

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

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rdd.clustering.features import (
    FEATURE_SPACES,
    LOSS_SCALE_FLOOR,
    PROBE_BUFFERS,
    embed_in_batches,
    fit_linear_probe,
    floor_loss_scale,
    load_feature_net,
    probe_loss,
    robust_scaling,
    style_statistics,
)
from rdd.config.errors import UserError
from rdd.utils.seeds import derived_seed

# The feature spaces standardised once, with the median and MAD of the first pool fitted.
STYLE_SPACES = ("style", "style_error")


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


class Grouping(nn.Module):
    """What every clusterer shares: schedule, pool, feature spaces, result buffers."""

    def __init__(
        self,
        name: str,
        every: int,
        pool_per_class: int | None,
        features: str,
        feature_net: str | None,
        seed: int,
        loss_floor: float = LOSS_SCALE_FLOOR,
    ) -> None:
        super().__init__()
        self.name = name
        # None: fit once, at iteration 0 (a fixed feature space gains nothing from refits).
        self.every = None if every is None else _check_int("every", every, 1)
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
        if (
            isinstance(loss_floor, bool)
            or not isinstance(loss_floor, int | float)
            or not (0 <= loss_floor < float("inf"))
        ):
            raise UserError(
                f"clustering.loss_floor must be a number of nats >= 0 (default ln 2 = "
                f"{LOSS_SCALE_FLOOR:.4f}), got {loss_floor!r}"
            )
        self.features = features
        self.loss_floor = float(loss_floor)
        self.feature_net = None if feature_net is None else str(feature_net)
        self.seed = int(seed)
        # A plain dict, not a submodule: the fixed net is reloaded from its file, not saved in
        # the clusterer's state_dict.
        self._fixed_cache: dict[tuple, nn.Module] = {}
        # Empty until the first fit; _load_from_state_dict resizes them to a checkpoint's.
        self.register_buffer("centroids", torch.empty(0))
        self.register_buffer("assignments", torch.empty(0, dtype=torch.int64))
        if features in STYLE_SPACES:  # their standardisation, fitted once
            self.register_buffer("feature_centre", torch.empty(0))
            self.register_buffer("feature_scale", torch.empty(0))
        if features == "style_error":  # the linear probe, fitted once with the scaling
            for name in PROBE_BUFFERS:
                self.register_buffer(name, torch.empty(0))

    def due(self, iteration: int) -> bool:
        """Whether to (re-)cluster at outer iteration ``iteration``: at 0 and every ``every``
        (``every`` None: at 0 only)."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        return iteration == 0 or (self.every is not None and iteration % self.every == 0)

    @property
    def ids_persist(self) -> bool:
        """Whether a group id names the same subgroup after a refit, so per-group state (a
        group DRO's weights) may be carried over: yes in a fixed feature space, where refits
        are matched to the previous fit (:mod:`rdd.clustering.matching`); no for
        ``embedding``, whose network changes between fits."""
        return self.features != "embedding"

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (or a fitted state_dict was loaded)."""
        return self.centroids.numel() > 0

    def pool(self, labels: Tensor, num_classes: int, iteration: int = 0) -> Tensor:
        """Indices of the real images to cluster: ``pool_per_class`` random ones per class.

        The draw depends only on ``seed`` and ``iteration``, so every rank (and a resumed run)
        picks the same pool. Classes with fewer images contribute all of them. The generator's
        seed is derived from a name of its own: seeded with the bare run seed, the draw at
        iteration 0 repeated ``data.subgroup``'s (both take ``randperm`` class by class from
        seed 0), so the pool was the altered images plus a few others.

        Args:
            labels: Classes of all real images, (N,).
            num_classes: Number of classes C.
            iteration: Outer iteration; a new pool is drawn at every re-clustering.

        Returns:
            Indices into ``labels`` (P,) int64 on the CPU, grouped by class.
        """
        labels = labels.detach().cpu()
        generator = torch.Generator().manual_seed(
            derived_seed("clustering.pool", self.seed, int(iteration))
        )
        chosen = []
        for label in range(num_classes):
            members = torch.nonzero(labels == label).squeeze(1)
            if self.pool_per_class is not None and members.numel() > self.pool_per_class:
                order = torch.randperm(members.numel(), generator=generator)
                members = members[order[: self.pool_per_class]].sort().values
            chosen.append(members)
        return torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.int64)

    def fit_features(
        self,
        images: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """:meth:`features_of` the pool being fitted; the style spaces first fit their scaling
        (and ``style_error`` its probe) on it.

        The scaling is fitted at the first fit only and then kept, so every refit of the run
        clusters in one fixed space (and its clusters can be matched to the previous fit's).
        """
        if self.features in STYLE_SPACES and self.feature_scale.numel() == 0:
            return self._fit_style_space(images, labels, num_classes)
        return self.features_of(images, net, num_classes, labels)

    def _fit_style_space(
        self, images: Tensor, labels: Tensor | None, num_classes: int | None
    ) -> Tensor:
        """The style spaces' scaling (and ``style_error``'s probe first), rank 0's on all ranks;
        returns the pool's standardised features, so they are not computed a second time."""
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if self.features == "style_error":
            labels = self._need_labels(labels)
            classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
            probe = fit_linear_probe(images, labels, classes)
            self._store(**dict(zip(probe, _broadcast_from_rank0(*probe.values()), strict=True)))
        raw = self._raw_style(images, labels)
        centre, scale = robust_scaling(raw)
        if self.features == "style_error":
            scale = floor_loss_scale(scale, self.loss_floor)
        centre, scale = _broadcast_from_rank0(centre, scale)  # one space on all ranks
        self._store(feature_centre=centre, feature_scale=scale)
        return (raw - centre) / scale

    def features_of(
        self,
        images: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """Features of ``images`` in the configured space, without gradients.

        Args:
            images: (N, C, H, W).
            net: The current matching network (needed for ``features=embedding``); its
                training flag is restored afterwards.
            num_classes: Classes of the saved classifier, for ``features=fixed_net`` files
                that do not record it.
            labels: The images' classes, (N,) (needed for ``features=style_error``: the probe's
                loss is that of each image's own class).

        Returns:
            Features (N, D), float32 on the CPU (D = C*H*W for pixels, 7 for style, 8 for
            style_error).

        Raises:
            ValueError: If ``images`` is not 4-D, ``features=embedding`` gets no ``net``,
                ``features=style_error`` no ``labels``, or a style space has not been fitted.
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if self.features == "pixels":
            return images.detach().flatten(1).to("cpu", torch.float32)
        if self.features in STYLE_SPACES:
            if self.feature_scale.numel() == 0:
                raise ValueError(
                    f"clustering.features={self.features} is standardised at fit(): fit first"
                )
            centre, scale = self.feature_centre.cpu(), self.feature_scale.cpu()
            return (self._raw_style(images, labels) - centre) / scale
        if self.features == "embedding":
            if net is None:
                raise ValueError(
                    "clustering.features=embedding needs the current network: pass net=..., "
                    "or set clustering.features to pixels or fixed_net"
                )
            return embed_in_batches(net, images)
        extractor = self._fixed_net(images.shape[1], num_classes, tuple(images.shape[2:]))
        return embed_in_batches(extractor.to(images.device), images)

    def _raw_style(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """The style statistics, with ``style_error`` the fitted probe's loss beside them."""
        statistics = style_statistics(images)
        if self.features != "style_error":
            return statistics
        probe = {name: getattr(self, name).cpu() for name in PROBE_BUFFERS}
        loss = probe_loss(images, self._need_labels(labels), probe)
        return torch.cat([statistics, loss.unsqueeze(1)], 1)

    def _need_labels(self, labels: Tensor | None) -> Tensor:
        if labels is None:
            raise ValueError(
                f"clustering.features={self.features} needs the images' labels: pass labels=..."
            )
        return labels

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

    def assign_with_margins(
        self,
        images: Tensor,
        labels: Tensor,
        net: nn.Module | None = None,
        num_classes: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The subclass's ``assign`` and no margins (None): without centroids of its own a
        clusterer ranks no member of a group above another (k-means overrides this)."""
        return self.assign(images, labels, net, num_classes), None

    def fit_stats(self) -> dict[str, float]:
        """Figures of the last fit for the run's log, beside the groups' sizes (none here)."""
        return {}

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
