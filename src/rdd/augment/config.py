"""DSA strategies (op names joined by ``_``), augmentation strengths, parameter names."""

from __future__ import annotations

from dataclasses import dataclass

from rdd.config.errors import UserError

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
