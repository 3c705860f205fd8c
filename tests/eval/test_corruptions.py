"""Tests for rdd.eval.corruptions against independent oracles (scipy, colorsys, NumPy, PIL)."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from rdd.config.errors import UserError
from rdd.eval import corruptions

RANDOM_SHIFTS = {"noise"}
RANDOM_CORRUPTIONS = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"}
CASES = [("shift", name, None) for name in corruptions.SHIFTS] + [
    ("corruption", name, sev) for name in corruptions.CORRUPTIONS for sev in corruptions.SEVERITIES
]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int = 8, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish images: random 4x4 colour fields upsampled bicubically, (n, c, size, size)."""
    coarse = torch.rand(n, c, 4, 4, generator=gen(seed))
    up = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return up.clamp(0, 1)


def mid_range_images(n: int = 8, c: int = 3, size: int = 32) -> torch.Tensor:
    """Smooth images squeezed into [0.2, 0.6]: neither brightness nor contrast clips."""
    return 0.2 + 0.4 * smooth_images(n, c, size)


def run(kind: str, name: str, sev: int | None, x: torch.Tensor, seed: int) -> torch.Tensor:
    if kind == "shift":
        return corruptions.apply_shift(name, x, gen(seed))
    return corruptions.apply_corruption(name, sev, x, gen(seed))


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("kind,name,sev", CASES)
@pytest.mark.parametrize("channels", [1, 3])
def test_contract(kind: str, name: str, sev: int | None, channels: int) -> None:
    x = smooth_images(4, channels, 16)
    x_before = x.clone()
    out = run(kind, name, sev, x, seed=1)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, x_before), "input modified in place"
    assert out.data_ptr() != x.data_ptr()
    assert torch.equal(out, run(kind, name, sev, x, seed=1)), "same seed, different output"
    is_random = name in (RANDOM_SHIFTS if kind == "shift" else RANDOM_CORRUPTIONS)
    if is_random:
        assert not torch.equal(out, run(kind, name, sev, x, seed=2)), "seed ignored"
    assert not torch.equal(out, x), "shift did nothing"


def test_float64_kept() -> None:
    x = smooth_images(2).double()
    for name in ["pixelate", "jpeg_compression", "brightness"]:
        assert corruptions.apply_corruption(name, 3, x, gen()).dtype == torch.float64


def test_uint8_helpers_round() -> None:
    x = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 1.0]).view(1, 1, 1, 4)
    a = corruptions.to_uint8(x)
    assert a.dtype == np.uint8 and a.shape == (1, 1, 4, 1)
    assert a.ravel().tolist() == [0, 0, 1, 255]
    back = corruptions.from_uint8(a)
    assert back.shape == x.shape and torch.allclose(back, torch.tensor([0, 0, 1 / 255, 1.0]))


def test_many_images_in_chunks() -> None:
    # More images than one PIL chunk: every image must still be processed (not left empty).
    x = smooth_images(corruptions.PIL_CHUNK + 3, 1, 8)
    out = corruptions.apply_corruption("pixelate", 5, x, gen())
    for i in (0, len(x) - 1):
        assert torch.equal(
            out[i : i + 1], corruptions.apply_corruption("pixelate", 5, x[i : i + 1], gen())
        )


# ---------------------------------------------------------------------------- protocol shifts


def test_gaussian_noise_variance() -> None:
    x = torch.full((64, 3, 32, 32), 0.5)  # mid-grey: 7 std from either bound, no clamping
    delta = corruptions.apply_shift("noise", x, gen(3)) - x
    assert delta.var().item() == pytest.approx(0.005, rel=0.03)
    assert abs(delta.mean().item()) < 1e-3


@pytest.mark.parametrize(
    "shape,sigma",
    [((3, 3, 32, 32), 2.0), ((2, 1, 5, 5), 2.0), ((2, 3, 7, 9), 0.7), ((2, 3, 16, 16), 0.4)],
)
def test_gaussian_blur_matches_scipy(shape: tuple[int, ...], sigma: float) -> None:
    x = torch.rand(shape, generator=gen(4))
    out = corruptions.gaussian_blur(x, sigma)
    ref = gaussian_filter(
        x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0
    )
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_blur_shift_is_sigma_2_and_keeps_constants() -> None:
    x = torch.rand(2, 3, 12, 12, generator=gen(5))
    assert torch.equal(corruptions.apply_shift("blur", x, gen()), corruptions.gaussian_blur(x, 2.0))
    const = torch.full((2, 3, 5, 5), 0.3)
    torch.testing.assert_close(corruptions.gaussian_blur(const, 2.0), const)


def test_invert_is_involution() -> None:
    x = torch.rand(3, 3, 8, 8, generator=gen(6))
    once = corruptions.apply_shift("invert", x, gen())
    torch.testing.assert_close(once, 1 - x)
    torch.testing.assert_close(corruptions.apply_shift("invert", once, gen()), x)


# ---------------------------------------------------------------------------- corruptions


def test_contrast_matches_numpy() -> None:
    x = torch.rand(3, 3, 8, 8, generator=gen(7))
    c = corruptions.CORRUPTIONS["contrast"][1][4]
    hwc = x.permute(0, 2, 3, 1).numpy().astype(np.float64)
    m = hwc.mean(axis=(1, 2), keepdims=True)  # per image and channel, as make_cifar_c.py
    ref = np.clip((hwc - m) * c + m, 0, 1).transpose(0, 3, 1, 2)
    out = corruptions.apply_corruption("contrast", 5, x, gen())
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("severity", [1, 5])
def test_brightness_matches_colorsys(severity: int) -> None:
    x = torch.rand(2, 3, 5, 5, generator=gen(8))
    x[0, :, 0, 0] = 0.0  # black: becomes grey
    x[0, :, 0, 1] = torch.tensor([0.98, 0.5, 0.1])  # V clips at 1
    x[1, :, 2, 2] = 0.4  # grey
    c = corruptions.CORRUPTIONS["brightness"][1][severity - 1]
    ref = np.empty(x.shape)
    for n, i, j in np.ndindex(x.shape[0], x.shape[2], x.shape[3]):
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j].double().tolist())
        ref[n, :, i, j] = colorsys.hsv_to_rgb(h, s, min(v + c, 1.0))
    out = corruptions.apply_corruption("brightness", severity, x, gen())
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_brightness_grey_channel_adds_delta() -> None:
    x = torch.rand(2, 1, 6, 6, generator=gen(9))
    out = corruptions.brightness(x, 0.2)
    torch.testing.assert_close(out, (x + 0.2).clamp(max=1))


def pil_images(x: torch.Tensor) -> list[Image.Image]:
    """Independent uint8 conversion: (N, 3, H, W) float -> PIL RGB images."""
    arr = np.rint(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    return [Image.fromarray(a, mode="RGB") for a in arr]


def stack(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_pixelate_matches_pil(severity: int) -> None:
    x = torch.rand(3, 3, 32, 32, generator=gen(10))
    s = int(32 * corruptions.CORRUPTIONS["pixelate"][1][severity - 1])
    ref = [im.resize((s, s), Image.BOX).resize((32, 32), Image.BOX) for im in pil_images(x)]
    out = corruptions.apply_corruption("pixelate", severity, x, gen())
    assert torch.equal(out, stack(ref))


@pytest.mark.parametrize("severity", corruptions.SEVERITIES)
def test_jpeg_matches_pil(severity: int) -> None:
    x = smooth_images(3, seed=11)
    quality = corruptions.CORRUPTIONS["jpeg_compression"][1][severity - 1]
    ref = []
    for im in pil_images(x):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        ref.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    out = corruptions.apply_corruption("jpeg_compression", severity, x, gen())
    assert torch.equal(out, stack(ref))


def test_jpeg_error_grows_as_quality_falls() -> None:
    x = torch.rand(4, 3, 32, 32, generator=gen(12))  # high-frequency: JPEG loses detail
    errors = [
        (corruptions.jpeg_compression(x, q) - x).abs().mean().item() for q in (95, 80, 40, 10)
    ]
    assert errors == sorted(errors) and errors[0] < errors[-1]


def test_impulse_noise_rate() -> None:
    x = torch.full((16, 3, 32, 32), 0.5)
    out = corruptions.impulse_noise(x, 0.07, gen(13))
    hit = out != 0.5
    assert hit.float().mean().item() == pytest.approx(0.07, rel=0.1)
    assert (out[hit] == 1).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_shot_noise_is_poisson() -> None:
    x = torch.full((64, 3, 32, 32), 0.5)
    rate = 50
    delta = corruptions.shot_noise(x, rate, gen(14)) - x
    # Poisson(x * rate) / rate has mean x and variance x / rate
    assert delta.var().item() == pytest.approx(0.5 / rate, rel=0.05)
    assert abs(delta.mean().item()) < 2e-3


@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_severity_increases_damage(name: str) -> None:
    x = mid_range_images() if name in ("contrast", "brightness") else smooth_images()
    errors = [
        (corruptions.apply_corruption(name, sev, x, gen(15)) - x).abs().mean().item()
        for sev in corruptions.SEVERITIES
    ]
    assert errors[0] < errors[-1]
    # No reversal between consecutive severities either (all rise on these images).
    steps = [hi - lo for lo, hi in zip(errors[:-1], errors[1:], strict=True)]
    assert min(steps) >= 0, errors


# ---------------------------------------------------------------------------- errors


def test_unknown_shift_names_choices() -> None:
    with pytest.raises(UserError, match="unknown shift 'x': choose one of noise, blur, invert"):
        corruptions.apply_shift("x", torch.rand(1, 3, 4, 4), gen())


def test_unknown_corruption_names_choices() -> None:
    with pytest.raises(UserError, match="unknown corruption 'fog'.*gaussian_noise.*jpeg"):
        corruptions.apply_corruption("fog", 1, torch.rand(1, 3, 4, 4), gen())


@pytest.mark.parametrize("severity", [0, 6, -1, True, 2.5])
def test_bad_severity(severity: object) -> None:
    with pytest.raises(UserError, match="severity must be one of 1, 2, 3, 4, 5"):
        corruptions.apply_corruption("contrast", severity, torch.rand(1, 3, 4, 4), gen())


def test_bad_images_rejected() -> None:
    with pytest.raises(UserError, match=r"\(N, C, H, W\)"):
        corruptions.apply_shift("invert", torch.rand(3, 4, 4), gen())
    with pytest.raises(UserError, match="C = 1 or 3"):
        corruptions.apply_corruption("pixelate", 1, torch.rand(1, 4, 8, 8), gen())
