"""The DSA ops: how each draws its parameters and applies them, differentiably."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from rdd.augment.config import DSAConfig

# ----------------------------------------------------------------------------
# Sampling: one function per op, drawing `n` parameter sets from a CPU generator.
# ----------------------------------------------------------------------------


def _uniform(gen: torch.Generator, n: int) -> Tensor:
    """Draw ``n`` samples of ``U[0, 1)`` (float32, CPU)."""
    return torch.rand(n, generator=gen)


def _sample_color(
    gen: torch.Generator, n: int, size: tuple[int, int], cfg: DSAConfig
) -> dict[str, Tensor]:
    return {
        "brightness": (_uniform(gen, n) - 0.5) * cfg.brightness,
        "saturation": _uniform(gen, n) * cfg.saturation,
        "contrast": _uniform(gen, n) + cfg.contrast,
    }


def _sample_crop(
    gen: torch.Generator, n: int, size: tuple[int, int], cfg: DSAConfig
) -> dict[str, Tensor]:
    # Round half up like the reference (Python's round() would give 2 for 2.5).
    max_dy, max_dx = (int(s * cfg.ratio_crop_pad + 0.5) for s in size)
    return {
        "crop_dy": torch.randint(-max_dy, max_dy + 1, (n,), generator=gen),
        "crop_dx": torch.randint(-max_dx, max_dx + 1, (n,), generator=gen),
    }


def _cutout_bounds(gen: torch.Generator, n: int, length: int, side: int) -> tuple[Tensor, Tensor]:
    """Draw ``n`` cutout intervals ``[lo, hi)`` of ``side`` pixels along an axis of ``length``.

    The centre range matches the reference: ``[0, length]`` for an even side and
    ``[0, length - 1]`` for an odd one, so both ends are hit equally often.
    """
    centre = torch.randint(0, length + 1 - side % 2, (n,), generator=gen)
    lo = centre - side // 2
    return lo.clamp(0, length), (lo + side).clamp(0, length)


def _sample_cutout(
    gen: torch.Generator, n: int, size: tuple[int, int], cfg: DSAConfig
) -> dict[str, Tensor]:
    side_h, side_w = cutout_side(size, cfg)
    y0, y1 = _cutout_bounds(gen, n, size[0], side_h)
    x0, x1 = _cutout_bounds(gen, n, size[1], side_w)
    return {"cutout_y0": y0, "cutout_y1": y1, "cutout_x0": x0, "cutout_x1": x1}


def _sample_flip(
    gen: torch.Generator, n: int, size: tuple[int, int], cfg: DSAConfig
) -> dict[str, Tensor]:
    return {"flip": _uniform(gen, n) < cfg.prob_flip}


def _sample_scale(
    gen: torch.Generator, n: int, size: tuple[int, int], cfg: DSAConfig
) -> dict[str, Tensor]:
    lo, hi = 1.0 / cfg.ratio_scale, cfg.ratio_scale
    # The reference draws sx (width) before sy (height); keep that order.
    scale_x = _uniform(gen, n) * (hi - lo) + lo
    scale_y = _uniform(gen, n) * (hi - lo) + lo
    return {"scale_y": scale_y, "scale_x": scale_x}


def _sample_rotate(
    gen: torch.Generator, n: int, size: tuple[int, int], cfg: DSAConfig
) -> dict[str, Tensor]:
    return {"rotate_deg": (_uniform(gen, n) - 0.5) * 2.0 * cfg.ratio_rotate}


def cutout_side(image_size: tuple[int, int], config: DSAConfig) -> tuple[int, int]:
    """Cutout square side ``(rows, cols)``: ``int(side * ratio_cutout + 0.5)`` per axis."""
    return tuple(int(s * config.ratio_cutout + 0.5) for s in image_size)  # type: ignore[return-value]


_Sampler = Callable[[torch.Generator, int, tuple[int, int], DSAConfig], dict[str, Tensor]]
_SAMPLERS: dict[str, _Sampler] = {
    "color": _sample_color,
    "crop": _sample_crop,
    "cutout": _sample_cutout,
    "flip": _sample_flip,
    "scale": _sample_scale,
    "rotate": _sample_rotate,
}


# ----------------------------------------------------------------------------
# Application: one function per op. `p` holds that transform's params already moved
# to x's device; float params also have x's dtype. Params have length 1 or N and
# broadcast over the batch.
# ----------------------------------------------------------------------------


def _per_image(v: Tensor) -> Tensor:
    """Reshape a ``(B,)`` parameter to ``(B, 1, 1, 1)`` to broadcast over ``(N, C, H, W)``."""
    return v.view(-1, 1, 1, 1)


def _apply_color(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    x = x + _per_image(p["brightness"])
    m = x.mean(dim=1, keepdim=True)  # per-pixel grey level
    x = (x - m) * _per_image(p["saturation"]) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)  # per-image mean intensity
    return (x - m) * _per_image(p["contrast"]) + m


def _apply_crop(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    """Translate content by ``(crop_dy, crop_dx)`` pixels with zero fill."""
    n, c, h, w = x.shape
    # A one-pixel zero border suffices: every out-of-range source index is clamped onto it.
    xp = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device) - p["crop_dy"][:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device) - p["crop_dx"][:, None] + 1).clamp(0, w + 1)
    rows = rows.expand(n, h)[:, None, :, None].expand(n, c, h, w + 2)
    cols = cols.expand(n, w)[:, None, None, :].expand(n, c, h, w)
    return xp.gather(2, rows).gather(3, cols)


def _apply_cutout(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    h, w = x.shape[-2:]
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_rows = (r >= p["cutout_y0"][:, None]) & (r < p["cutout_y1"][:, None])  # (B, H)
    in_cols = (c >= p["cutout_x0"][:, None]) & (c < p["cutout_x1"][:, None])  # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def _apply_flip(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    return torch.where(_per_image(p["flip"]), x.flip(3), x)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` (N, C, H, W) with affine matrices ``theta`` (B, 2, 3), B in {1, N}."""
    theta = theta.expand(x.shape[0], 2, 3)
    # align_corners=True reproduces the pre-1.3 PyTorch behaviour the reference was written for.
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _apply_scale(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    sx, sy = p["scale_x"], p["scale_y"]
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)
    return _warp(x, theta)


def _apply_rotate(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
    a = p["rotate_deg"] * (math.pi / 180.0)
    cos, sin, zero = a.cos(), a.sin(), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    return _warp(x, theta)


_Applier = Callable[[Tensor, Mapping[str, Tensor]], Tensor]
_APPLIERS: dict[str, _Applier] = {
    "color": _apply_color,
    "crop": _apply_crop,
    "cutout": _apply_cutout,
    "flip": _apply_flip,
    "scale": _apply_scale,
    "rotate": _apply_rotate,
}
