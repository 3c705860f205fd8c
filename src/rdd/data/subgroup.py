"""Known rare subgroups: a benchmark mode that alters a fraction of every class's images.

With ``data.subgroup`` set, a seeded ``fraction`` (default 5%) of each class's training images
(and, with another seed, of its validation images) is altered by a named transform, so every
class has a known rare subgroup. The test set is scored twice, as it is and fully altered; the
lower of the two accuracies is ``worst_group_acc``.

Transforms act on raw uint8 images (N, C, H, W) in pixel space, before normalisation and ZCA,
and return uint8. Adding one is adding a function to ``TRANSFORMS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from rdd.config.errors import UserError
from rdd.eval.corruptions import gaussian_blur, quantise
from rdd.utils.seeds import derived_seed

# ITU-R BT.601 luma weights in thousandths, so that the rounding is exact in integers.
LUMA_WEIGHTS = (299, 587, 114)
# Blur sigma (PIL's radius) at 32x32, grown in proportion above: always stronger than the
# evaluation's blur shift (sigma 2), and as strong relative to the image on ImageNet sizes.
BLUR_SIGMA = 3.0
BLUR_REFERENCE_SIZE = 32
EXAMPLE = "data.subgroup={transform:invert,fraction:0.05,seed:0}"


def grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, rounded) replicated over the 3 channels.

    Args:
        x: uint8 (N, 3, H, W).

    Returns:
        uint8 (N, 3, H, W) with equal channels.
    """
    if x.shape[1] != 3:
        raise UserError(
            f"data.subgroup transform 'grayscale' needs RGB images, got {x.shape[1]} channel(s): "
            "choose data.subgroup=invert or data.subgroup=blur"
        )
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.int32, device=x.device).view(1, 3, 1, 1)
    luma = ((x.int() * weights).sum(1, keepdim=True) + 500) // 1000  # round half up
    return luma.to(torch.uint8).expand_as(x).contiguous()


def invert(x: Tensor) -> Tensor:
    """255 - x. x: uint8 (N, C, H, W)."""
    return 255 - x


def blur(x: Tensor) -> Tensor:
    """Strong Gaussian blur: sigma 3 up to 32x32, ``3 * min(H, W) / 32`` above.

    Args:
        x: uint8 (N, C, H, W).

    Returns:
        uint8 (N, C, H, W), blurred in [0, 1] by ``rdd.eval.corruptions.gaussian_blur`` and rounded.
    """
    sigma = BLUR_SIGMA * max(1.0, min(x.shape[-2:]) / BLUR_REFERENCE_SIZE)
    return quantise(gaussian_blur(x.float() / 255, sigma))


TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "grayscale": grayscale,
    "invert": invert,
    "blur": blur,
}


def pick_members(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Exactly ``max(1, round(fraction * n_c))`` random images of every class c present.

    Args:
        labels: int64 (N,).
        fraction: Fraction of each class, in (0, 1).
        seed: Seed of the ``torch.Generator`` that draws the members (nothing else does).

    Returns:
        bool (N,): which images belong to the subgroup.
    """
    generator = torch.Generator().manual_seed(seed)
    members = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        n = min(max(1, round(fraction * len(idx))), len(idx))
        members[idx[torch.randperm(len(idx), generator=generator)[:n]]] = True
    return members


def alter_subgroup(
    images: Tensor, labels: Tensor, fraction: float, transform: str, seed: int
) -> tuple[Tensor, Tensor]:
    """Alter a seeded ``fraction`` of every class's images by ``TRANSFORMS[transform]``.

    Args:
        images: uint8 (N, C, H, W); not modified.
        labels: int64 (N,).
        fraction, seed: as in :func:`pick_members`.
        transform: A key of ``TRANSFORMS``.

    Returns:
        The images with the subgroup altered, uint8 (N, C, H, W), and the subgroup, bool (N,).
    """
    members = pick_members(labels, fraction, seed)
    altered = images.clone()
    if members.any():
        altered[members] = TRANSFORMS[transform](images[members])
    return altered, members


@dataclass(frozen=True)
class Subgroup:
    """The ``data.subgroup`` setting: which transform, on which fraction, drawn with which seed."""

    transform: str
    fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise UserError(
                f"unknown data.subgroup transform '{self.transform}': choose one of "
                f"{', '.join(TRANSFORMS)} (e.g. data.subgroup=invert)"
            )
        fraction = self.fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise UserError(f"data.subgroup.fraction must be a number, got '{fraction}': {EXAMPLE}")
        if not 0 < fraction < 1:
            raise UserError(
                f"data.subgroup.fraction={fraction} must lie in (0, 1) (a fraction of each "
                f"class): set e.g. {EXAMPLE}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(
                f"data.subgroup.seed must be a non-negative integer, got '{self.seed}': set e.g. {EXAMPLE}"
            )

    @classmethod
    def from_config(cls, node: Any) -> Subgroup | None:
        """None (off), a transform name (``data.subgroup=blur``) or a mapping of the fields."""
        if node is None:
            return None
        if isinstance(node, str):
            return cls(node)
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        if not isinstance(node, Mapping) or "transform" not in node:
            raise UserError(
                f"data.subgroup must be null, a transform name or a mapping with a transform, "
                f"got '{node}': set e.g. {EXAMPLE}"
            )
        unknown = sorted(set(node) - {"transform", "fraction", "seed"})
        if unknown:
            raise UserError(
                f"unknown data.subgroup key '{unknown[0]}': give transform, fraction and seed, "
                f"e.g. {EXAMPLE}"
            )
        return cls(**node)

    def check_channels(self, channel: int, dataset: str) -> None:
        """Grayscale would leave 1-channel images unchanged: no subgroup at all."""
        if self.transform == "grayscale" and channel != 3:
            raise UserError(
                f"data.subgroup transform 'grayscale' needs RGB images but '{dataset}' has "
                f"{channel} channel(s): choose data.subgroup=invert or data.subgroup=blur"
            )

    def split_seed(self, split: str) -> int:
        """The training split uses ``seed``; others (val) their own seed derived from it."""
        return self.seed if split == "train" else derived_seed(self.seed, split)

    def alter(self, images: Tensor, labels: Tensor, split: str = "train") -> tuple[Tensor, Tensor]:
        """:func:`alter_subgroup` of one split of uint8 images (N, C, H, W) with labels (N,)."""
        return alter_subgroup(images, labels, self.fraction, self.transform, self.split_seed(split))

    def apply(self, images: Tensor) -> Tensor:
        """Every image altered: uint8 (N, C, H, W) -> uint8 (N, C, H, W)."""
        return TRANSFORMS[self.transform](images)

    def key(self) -> dict[str, Any]:
        """What cache keys of anything fitted on the altered train split must include."""
        return asdict(self)
