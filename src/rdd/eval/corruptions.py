"""Seeded distribution shifts of test images, for robustness evaluation.

Every function takes float images x (N, C, H, W) in [0, 1] (pixel space, C = 1 or 3) and
returns a new tensor of the same shape and dtype in [0, 1]; x is never modified. Random shifts
draw only from the `torch.Generator` they are given, so a seed fixes the output.

Two families:

* `SHIFTS`: the three fixed shifts of our protocol (Gaussian noise of variance 0.005, Gaussian
  blur of sigma 2, colour inversion), used with `apply_shift`.
* `CORRUPTIONS`: common corruptions after CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), with
  the five severities of their `make_cifar_c.py`, used with `apply_corruption`.

Unlike CIFAR-10-C, which saves every corrupted image as uint8, the float corruptions stay
float; only the PIL-based ones (pixelate, JPEG) go through uint8, via `to_uint8`/`from_uint8`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Generator, Tensor

from rdd.config.errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)
PIL_CHUNK = 1024  # images converted to uint8 at a time: bounds the copies for N = 10,000
BLUR_TRUNCATE = 3.0  # kernel radius in standard deviations


def _check_images(x: Tensor) -> None:
    """Raise UserError unless x is a float (N, C, H, W) batch with 1 or 3 channels."""
    if x.ndim != 4 or not x.is_floating_point() or x.shape[1] not in (1, 3):
        raise UserError(
            f"shifts expect float images (N, C, H, W) with C = 1 or 3, "
            f"got {tuple(x.shape)} {x.dtype}"
        )


# ---------------------------------------------------------------------------- uint8 / PIL


def to_uint8(x: Tensor) -> np.ndarray:
    """Float images (N, C, H, W) in [0, 1] -> uint8 array (N, H, W, C), rounded (not truncated)."""
    return (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def quantise(x: Tensor) -> Tensor:
    """Float images in [0, 1] -> uint8, rounded (shifted sets are stored like CIFAR-10-C)."""
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


def from_uint8(a: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 array (N, H, W, C) -> float images (N, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(dtype) / 255


def _map_pil(x: Tensor, fn: Callable[[Image.Image], Image.Image]) -> Tensor:
    """Apply a PIL image -> image function to each image of x (N, C, H, W), in chunks.

    Returns:
        (N, C, H, W) tensor of x's dtype with the uint8 results scaled to [0, 1].
    """
    _check_images(x)
    out = torch.empty_like(x, device="cpu")
    for start in range(0, x.shape[0], PIL_CHUNK):
        batch = to_uint8(x[start : start + PIL_CHUNK].cpu())  # (n, H, W, C)
        res = np.empty_like(batch)
        for i, img in enumerate(batch):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            res[i] = np.asarray(fn(pil)).reshape(img.shape)
        out[start : start + len(batch)] = from_uint8(res, x.dtype)
    return out.to(x.device)


# ---------------------------------------------------------------------------- protocol shifts


def gaussian_noise(x: Tensor, variance: float, generator: Generator) -> Tensor:
    """x + N(0, variance) per element, clamped to [0, 1]. x: (N, C, H, W)."""
    _check_images(x)
    if variance < 0:
        raise UserError(f"noise variance must be >= 0, got {variance}")
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + math.sqrt(variance) * noise).clamp(0, 1)


def _symmetric_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Indices (n + 2*pad,) into range(n) that pad by symmetric reflection (d c b a | a b c d).

    Folding into one period of length 2n works for any pad, also pad >= n, where torch's
    'reflect' padding fails (it also mirrors without repeating the edge).
    """
    idx = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian (2r + 1,), r = int(3 sigma + 0.5) as scipy.ndimage rounds it."""
    radius = int(BLUR_TRUNCATE * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2) if sigma > 0 else (t == 0).double()
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of each channel with standard deviation sigma (pixels).

    Matches scipy.ndimage.gaussian_filter(mode='reflect', truncate=3.0) over H and W. PIL's
    GaussianBlur `radius` is this sigma.

    Args:
        x: (N, C, H, W) images in [0, 1].
        sigma: Standard deviation >= 0; 0 returns a copy.

    Returns:
        (N, C, H, W) blurred images.
    """
    _check_images(x)
    if sigma < 0:
        raise UserError(f"blur sigma must be >= 0, got {sigma}")
    n, c, h, w = x.shape
    k = _gaussian_kernel(sigma, x.dtype, x.device)
    r = (len(k) - 1) // 2
    y = x.reshape(n * c, 1, h, w)  # channels blurred independently
    y = F.conv2d(y[:, :, _symmetric_index(h, r, x.device)], k.view(1, 1, -1, 1))
    y = F.conv2d(y[:, :, :, _symmetric_index(w, r, x.device)], k.view(1, 1, 1, -1))
    return y.reshape(n, c, h, w).clamp(0, 1)


def invert(x: Tensor) -> Tensor:
    """1 - x. x: (N, C, H, W)."""
    _check_images(x)
    return 1 - x


def _noise_shift(x: Tensor, generator: Generator) -> Tensor:
    return gaussian_noise(x, 0.005, generator)


def _blur_shift(x: Tensor, generator: Generator | None = None) -> Tensor:
    return gaussian_blur(x, 2.0)


def _invert_shift(x: Tensor, generator: Generator | None = None) -> Tensor:
    return invert(x)


SHIFTS: dict[str, Callable[[Tensor, Generator], Tensor]] = {
    "noise": _noise_shift,
    "blur": _blur_shift,
    "invert": _invert_shift,
}


# ---------------------------------------------------------------------------- CIFAR-10-C


def _gaussian_noise_std(x: Tensor, std: float, generator: Generator) -> Tensor:
    """CIFAR-10-C gaussian_noise: x + N(0, std^2), clipped."""
    return gaussian_noise(x, std**2, generator)


def shot_noise(x: Tensor, rate: float, generator: Generator) -> Tensor:
    """Poisson(x * rate) / rate, clipped: photon noise with `rate` photons at full intensity."""
    _check_images(x)
    return (torch.poisson(x * rate, generator=generator) / rate).clamp(0, 1)


def impulse_noise(x: Tensor, amount: float, generator: Generator) -> Tensor:
    """Salt and pepper: each element independently becomes 0 or 1 (equally) w.p. `amount`.

    As skimage.util.random_noise(mode='s&p'), which CIFAR-10-C calls on the (H, W, C) array,
    so channels of one pixel are hit independently.
    """
    _check_images(x)
    flip = torch.rand(x.shape, generator=generator, device=x.device) < amount
    salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


def speckle_noise(x: Tensor, std: float, generator: Generator) -> Tensor:
    """x + x * N(0, std^2), clipped: noise proportional to intensity."""
    _check_images(x)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + x * std * noise).clamp(0, 1)


def _gaussian_blur_c(x: Tensor, sigma: float, generator: Generator | None = None) -> Tensor:
    return gaussian_blur(x, sigma)


def contrast(x: Tensor, factor: float, generator: Generator | None = None) -> Tensor:
    """(x - m) * factor + m, clipped, m the per-image, per-channel mean over H and W.

    make_cifar_c.py takes np.mean(x, axis=(0, 1)) of an (H, W, C) image: one mean per channel.
    """
    _check_images(x)
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * factor + m).clamp(0, 1)


def brightness(x: Tensor, delta: float, generator: Generator | None = None) -> Tensor:
    """Add delta to the HSV value channel (clipped to 1) and go back to RGB.

    With hue and saturation fixed, RGB is proportional to V = max over channels, so the
    round trip through HSV is rgb * min(V + delta, 1) / V; black (V = 0, saturation 0)
    becomes grey (delta, delta, delta). For 1-channel images V is the pixel itself.

    Args:
        x: (N, C, H, W) images in [0, 1].
        delta: Increase of V, >= 0.

    Returns:
        (N, C, H, W) brightened images.
    """
    _check_images(x)
    v = x.amax(dim=1, keepdim=True)  # (N, 1, H, W)
    new_v = (v + delta).clamp(0, 1)
    scaled = x * (new_v / v.clamp_min(torch.finfo(x.dtype).tiny))
    return torch.where(v > 0, scaled, new_v.expand_as(x)).clamp(0, 1)


def pixelate(x: Tensor, factor: float, generator: Generator | None = None) -> Tensor:
    """PIL box downscale to (int(W * factor), int(H * factor)), then box upscale back."""
    h, w = x.shape[-2:]
    small = (max(1, int(w * factor)), max(1, int(h * factor)))
    return _map_pil(x, lambda im: im.resize(small, Image.BOX).resize((w, h), Image.BOX))


def _jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert(img.mode)


def jpeg_compression(x: Tensor, quality: int, generator: Generator | None = None) -> Tensor:
    """JPEG-encode each uint8 image with PIL at `quality` (1..95) and decode it."""
    return _map_pil(x, lambda im: _jpeg_roundtrip(im, int(quality)))


# name -> (function(x, parameter, generator), parameters of severities 1..5), make_cifar_c.py
CORRUPTIONS: dict[str, tuple[Callable[..., Tensor], tuple]] = {
    "gaussian_noise": (_gaussian_noise_std, (0.04, 0.06, 0.08, 0.09, 0.10)),
    "shot_noise": (shot_noise, (500, 250, 100, 75, 50)),
    "impulse_noise": (impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
    "speckle_noise": (speckle_noise, (0.06, 0.1, 0.12, 0.16, 0.2)),
    "gaussian_blur": (_gaussian_blur_c, (0.4, 0.6, 0.7, 0.8, 1.0)),
    "contrast": (contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
    "brightness": (brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),
    "pixelate": (pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),
    "jpeg_compression": (jpeg_compression, (80, 65, 58, 50, 40)),
}


def apply_shift(name: str, x: Tensor, generator: Generator) -> Tensor:
    """Apply the protocol shift `name` (a key of SHIFTS) to x (N, C, H, W)."""
    if name not in SHIFTS:
        raise UserError(f"unknown shift {name!r}: choose one of {', '.join(SHIFTS)}")
    return SHIFTS[name](x, generator)


def apply_corruption(name: str, severity: int, x: Tensor, generator: Generator) -> Tensor:
    """Apply CIFAR-10-C corruption `name` at `severity` (1..5) to x (N, C, H, W)."""
    if name not in CORRUPTIONS:
        raise UserError(f"unknown corruption {name!r}: choose one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        choices = ", ".join(map(str, SEVERITIES))
        raise UserError(f"severity must be one of {choices}, got {severity!r}")
    fn, params = CORRUPTIONS[name]
    return fn(x, params[int(severity) - 1], generator)
