"""IDM's partition-and-expansion: one stored synthetic image holds ``factor x factor`` smaller
images, each upsampled to full size when the set is used (Zhao et al., CVPR 2023).

A stored image of size (H, W) is cut into a ``factor x factor`` grid of (H/f, W/f) tiles; tile
(row i, column j) of every image is upsampled bilinearly to (H, W). The expanded set lists
tile (0, 0) of every image, then tile (1, 0), (0, 1), ... (column-major over the grid, the
published order for f = 2), with the labels repeated alike. ``factor=1`` is the identity.
Distillation expands before augmenting; evaluation expands the stored set the same way (the
factor travels in the synset metadata).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_factor(factor: int, image_size: tuple[int, int] | None = None) -> int:
    """The factor if it is a positive integer that tiles ``image_size`` exactly; ValueError
    otherwise."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"matching.factor must be a positive integer, got {factor}")
    if image_size is None:
        return int(factor)
    h, w = image_size
    if h % factor or w % factor:
        raise ValueError(
            f"matching.factor={factor} does not divide the image size {h}x{w}: choose a divisor"
        )
    return int(factor)


def expand(
    images: torch.Tensor, labels: torch.Tensor, factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W), (N,) -> (N * f^2, C, H, W), (N * f^2,); differentiable in ``images``."""
    if factor == 1:
        return images, labels
    h, w = images.shape[-2:]
    check_factor(factor, (h, w))
    th, tw = h // factor, w // factor
    tiles = [
        images[..., i * th : (i + 1) * th, j * tw : (j + 1) * tw]
        for j in range(factor)
        for i in range(factor)
    ]
    upsampled = F.interpolate(torch.cat(tiles), size=(h, w), mode="bilinear", align_corners=False)
    return upsampled, labels.repeat(factor * factor)


def pack(draws: list[torch.Tensor], factor: int) -> torch.Tensor:
    """Stored images whose tiles are the given full-size images, downscaled.

    Args:
        draws: ``factor**2`` batches (N, C, H, W), in the tile order of :func:`expand`.

    Returns:
        (N, C, H, W): tile k of image n is ``draws[k][n]`` downscaled bilinearly by ``factor``.
    """
    if len(draws) != factor * factor:
        raise ValueError(f"pack needs factor^2 = {factor * factor} batches, got {len(draws)}")
    if factor == 1:
        return draws[0].clone()
    h, w = draws[0].shape[-2:]
    check_factor(factor, (h, w))
    th, tw = h // factor, w // factor
    packed = torch.empty_like(draws[0])
    order = [(i, j) for j in range(factor) for i in range(factor)]
    for (i, j), batch in zip(order, draws, strict=True):
        small = F.interpolate(batch, size=(th, tw), mode="bilinear", align_corners=False)
        packed[..., i * th : (i + 1) * th, j * tw : (j + 1) * tw] = small
    return packed
