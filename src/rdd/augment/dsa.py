"""DSA sampling: :class:`DSA` draws a :class:`DSATransform`, which augments batches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from rdd.augment.config import MODES, OPS, PARAM_KEYS, DSAConfig, parse_strategy
from rdd.augment.ops import _APPLIERS, _SAMPLERS
from rdd.config.errors import UserError
from rdd.parallel.device import to_device


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
        moved = self._on(x.device, x.dtype)
        return {key: moved[key] for key in PARAM_KEYS[op]}

    def _on(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """Every param on ``device`` (floating ones in ``dtype``), moved in one non-blocking
        copy per device and dtype and kept: a per-op, per-batch copy made the host wait for
        the GPU several times per step. The float64 round trip is exact (the params are
        float32, small integers or bools)."""
        cache = self.__dict__.setdefault("_moved", {})  # frozen: no attribute assignment
        if (device, dtype) not in cache:
            keys = [key for op in self.ops for key in PARAM_KEYS[op]]
            flat = torch.cat([self.params[key].to(torch.float64) for key in keys])
            parts = to_device(flat, device).split([len(self.params[key]) for key in keys])
            cache[device, dtype] = {
                key: part.to(
                    dtype if self.params[key].is_floating_point() else self.params[key].dtype
                )
                for key, part in zip(keys, parts, strict=True)
            }
        return cache[device, dtype]


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
