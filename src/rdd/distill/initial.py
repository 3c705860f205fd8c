"""How a synthetic set starts: random real images of every class (or noise), checked."""

from __future__ import annotations

from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.distill.expansion import check_factor, pack


def check_class_sizes(data: Any, ipc: int) -> None:
    counts = torch.bincount(data.train_y, minlength=data.num_classes)
    if int(counts.min()) < ipc:
        c = int(counts.argmin())
        raise UserError(
            f"class '{data.class_names[c]}' has {int(counts.min())} training images, fewer than "
            f"ipc={ipc}: lower ipc"
        )


def initial_images(
    data: Any, ipc: int, init: str, generator: torch.Generator, factor: int = 1
) -> torch.Tensor:
    """Starting images grouped by class: random real images of each class, or N(0, 1) noise.

    With partition-and-expansion (``factor > 1``) each image packs ``factor**2`` downscaled
    real images of its class, each tile from its own random draw.
    """
    shape = (data.num_classes * ipc, data.channel, *data.im_size)
    if init == "noise":
        return torch.randn(shape, generator=generator)
    return pack([real_draw(data, ipc, generator) for _ in range(factor * factor)], factor)


def real_draw(data: Any, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """ipc random real images of every class, grouped by class."""
    picks = []
    for c in range(data.num_classes):
        members = (data.train_y == c).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
    return data.train_x[torch.cat(picks)]


def expansion_factor(matcher: Any, data: Any) -> int:
    """The matcher's partition-and-expansion factor, checked against the image size."""
    try:
        return check_factor(matcher.factor, tuple(data.im_size))
    except ValueError as err:
        raise UserError(str(err)) from None
