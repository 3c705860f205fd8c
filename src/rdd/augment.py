"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021).

DSA augments real and synthetic images with the *same* random transform before
matching them, and every transform is differentiable w.r.t. the images so the
matching loss reaches the synthetic pixels.

Randomness is explicit: :meth:`DSA.sample` draws all parameters from a CPU
``torch.Generator`` into a :class:`DSATransform`, which can then be applied to any
number of batches (on any device). A transform sampled with ``batch_size=None`` is
*siamese*: one parameter set shared by every image, so a real batch and a synthetic
batch of different sizes get the identical transform.

Example::

    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    t = dsa.sample(generator, image_size=(32, 32))
    loss = match(net(t(x_real)), net(t(x_syn)))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rdd.errors import UserError

__all__ = [
    "OPS",
    "MODES",
    "DSAConfig",
    "DSA",
    "DSATransform",
    "parse_strategy",
    "strategy_without_flip",
]

OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
MODES: tuple[str, ...] = ("single", "all")


@dataclass(frozen=True)
class DSAConfig:
    """Augmentation strengths; defaults are the published DSA values.

    Attributes:
        ratio_scale: scale factors are drawn from ``U[1/ratio_scale, ratio_scale]``.
        ratio_rotate: rotation angles are drawn from ``U[-ratio_rotate, ratio_rotate]`` degrees.
        ratio_crop_pad: maximum translation as a fraction of the image side.
        ratio_cutout: side of the cutout square as a fraction of the image side.
        prob_flip: probability of a horizontal flip.
        brightness: brightness offset is ``(u - 0.5) * brightness``.
        saturation: saturation factor is ``u * saturation``.
        contrast: contrast factor is ``u + contrast``.
    """

    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    prob_flip: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


# Parameter names each op stores in DSATransform.params; every value is a 1-D CPU
# tensor of length 1 (siamese) or batch_size (per image).
PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop_dy", "crop_dx"),
    "cutout": ("cutout_y0", "cutout_y1", "cutout_x0", "cutout_x1"),
    "flip": ("flip",),
    "scale": ("scale_y", "scale_x"),
    "rotate": ("rotate_deg",),
}


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a DSA strategy string such as ``"color_crop_flip"`` into op names.

    Args:
        strategy: op names joined by ``"_"``.

    Returns:
        The op names, in strategy order.

    Raises:
        UserError: (a ``ValueError``) if the strategy is empty, names an unknown op
            or repeats one.
    """
    ops = tuple(strategy.split("_")) if strategy else ()
    valid = ", ".join(OPS)
    if not ops:
        raise UserError(f"empty DSA strategy; join one or more of: {valid} with '_'")
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise UserError(f"unknown DSA op(s) {unknown} in strategy {strategy!r}; valid ops: {valid}")
    if len(set(ops)) != len(ops):
        raise UserError(f"DSA strategy {strategy!r} repeats an op; list each op once")
    return ops


def strategy_without_flip(strategy: str) -> str:
    """Remove ``flip`` from a strategy (digits must not be mirrored: MNIST, SVHN).

    Args:
        strategy: a valid DSA strategy string.

    Returns:
        The same strategy without ``flip``, other ops in their original order.

    Raises:
        UserError: if the strategy is invalid or ``flip`` was its only op.
    """
    ops = [op for op in parse_strategy(strategy) if op != "flip"]
    if not ops:
        raise UserError(f"DSA strategy {strategy!r} has no op left after removing flip")
    return "_".join(ops)


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


@dataclass(frozen=True, eq=False)
class DSATransform:
    """A sampled DSA transform: fixed parameters, applicable to many batches.

    Attributes:
        ops: op names applied in this order.
        params: for each key in ``PARAM_KEYS[op]`` of every op, a 1-D CPU tensor of
            length 1 (siamese, shared by all images) or ``batch_size`` (per image):
            ``brightness`` additive offset, ``saturation``/``contrast`` factors,
            ``crop_dy``/``crop_dx`` integer shifts (content moves down/right),
            ``cutout_{y0,y1,x0,x1}`` the zeroed box ``[y0, y1) x [x0, x1)``,
            ``flip`` bool, ``scale_y``/``scale_x`` affine sampling factors
            (>1 shrinks the content), ``rotate_deg`` angle in degrees.
        image_size: ``(H, W)`` the params were drawn for; inputs must match it.
        batch_size: ``None`` for a siamese transform, else the required batch size.
    """

    ops: tuple[str, ...]
    params: Mapping[str, Tensor]
    image_size: tuple[int, int]
    batch_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown DSA op(s) {unknown}; valid ops: {', '.join(OPS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {self.batch_size}")
        n = 1 if self.batch_size is None else self.batch_size
        for op in self.ops:
            for key in PARAM_KEYS[op]:
                if key not in self.params:
                    raise ValueError(f"DSATransform op {op!r} needs param {key!r}")
                if tuple(self.params[key].shape) != (n,):
                    raise ValueError(
                        f"param {key!r} has shape {tuple(self.params[key].shape)}, expected ({n},)"
                    )

    def __call__(self, x: Tensor) -> Tensor:
        """Apply the transform.

        Args:
            x: images, shape (N, C, H, W); ``(H, W)`` must equal ``image_size`` and N
                must equal ``batch_size`` unless the transform is siamese.

        Returns:
            Augmented images, shape (N, C, H, W), on x's device and dtype,
            differentiable w.r.t. ``x``.

        Raises:
            ValueError: on a shape mismatch.
        """
        self._check_input(x)
        for op in self.ops:
            x = _APPLIERS[op](x, self._params_for(op, x))
        return x.contiguous()

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"DSA expects images of shape (N, C, H, W), got {tuple(x.shape)}")
        # Checked for every op, not only size-dependent ones, so that a wrong size fails
        # every time rather than only when crop or cutout happens to be drawn.
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"transform was sampled for images of size {self.image_size}, got {tuple(x.shape[-2:])}"
            )
        if self.batch_size is not None and x.shape[0] != self.batch_size:
            raise ValueError(
                f"per-image transform was sampled for batch_size={self.batch_size}, got {x.shape[0]} "
                "images; sample with batch_size=None for a shared (siamese) transform"
            )

    def _params_for(self, op: str, x: Tensor) -> dict[str, Tensor]:
        """This op's params on x's device; floating params also cast to x's dtype."""
        out = {}
        for key in PARAM_KEYS[op]:
            v = self.params[key]
            out[key] = (
                v.to(device=x.device, dtype=x.dtype) if v.is_floating_point() else v.to(x.device)
            )
        return out


class DSA:
    """Differentiable Siamese Augmentation sampler.

    Args:
        strategy: op names from :data:`OPS` joined by ``"_"``.
        mode: ``"single"`` picks one op uniformly at random per :meth:`sample`
            (the reference's ``'S'`` mode; ``color`` is brightness, saturation and
            contrast together); ``"all"`` applies every op in strategy order
            (the reference's ``'M'`` mode).
        config: augmentation strengths; defaults to the published values.

    Raises:
        UserError: (a ``ValueError``) on an invalid strategy or mode.
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        mode: str = "single",
        config: DSAConfig | None = None,
    ) -> None:
        if mode not in MODES:
            raise UserError(f"unknown DSA mode {mode!r}; use one of: {', '.join(MODES)}")
        self.ops = parse_strategy(strategy)
        self.strategy = strategy
        self.mode = mode
        self.config = config if config is not None else DSAConfig()

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r}, config={self.config!r})"

    def sample(
        self,
        generator: torch.Generator,
        batch_size: int | None = None,
        image_size: tuple[int, int] = (32, 32),
    ) -> DSATransform:
        """Draw a transform's parameters from ``generator``.

        Args:
            generator: a CPU generator; the only source of randomness, so results do
                not depend on the device the images live on.
            batch_size: ``None`` for a siamese transform (one parameter set shared by
                every image of any batch); ``n`` for independent parameters per image,
                applicable only to batches of exactly ``n``. In ``"single"`` mode the
                chosen op is the same for the whole batch, as in the reference.
            image_size: ``(H, W)`` of the images the transform will be applied to.

        Returns:
            The sampled transform.

        Raises:
            ValueError: if the generator is not a CPU generator or batch_size < 1.
        """
        if generator.device.type != "cpu":
            raise ValueError(f"DSA needs a CPU torch.Generator, got one on {generator.device}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {batch_size}")
        size = (int(image_size[0]), int(image_size[1]))
        n = 1 if batch_size is None else batch_size
        ops = self.ops
        if self.mode == "single":
            ops = (ops[int(torch.randint(len(ops), (1,), generator=generator))],)
        params: dict[str, Tensor] = {}
        for op in ops:
            params.update(_SAMPLERS[op](generator, n, size, self.config))
        return DSATransform(ops=ops, params=params, image_size=size, batch_size=batch_size)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment each image of ``x`` (N, C, H, W) with its own random parameters.

        Returns:
            Augmented images, shape (N, C, H, W).
        """
        t = self.sample(generator, batch_size=x.shape[0], image_size=tuple(x.shape[-2:]))
        return t(x)
