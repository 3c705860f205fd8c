"""The shifted test sets of the evaluation: seeded, built from raw pixels, cached on disk."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from rdd.eval.corruptions import apply_corruption, apply_shift
from rdd.eval.shifted_sets import shifted_test_sets
from rdd.utils.seeds import derived_seed


class TinyTestSet:
    """What shifted_test_sets needs of a data module: raw uint8 test images and the mapping
    to the model's input space (here a plain affine normalisation)."""

    def __init__(self, cache_dir) -> None:
        gen = torch.Generator().manual_seed(0)
        self.test_uint8 = torch.randint(0, 256, (6, 3, 8, 8), generator=gen, dtype=torch.uint8)
        self.cache_dir = cache_dir

    def test_pixels(self) -> torch.Tensor:
        return self.test_uint8.float() / 255.0

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255.0 if x.dtype == torch.uint8 else x) * 2 - 1


SETTINGS = OmegaConf.create(
    {
        "shifts": ["noise", "invert"],
        "corruptions": ["contrast"],
        "severities": [2, 5],
        "shift_seed": 0,
    }
)


def test_each_set_is_the_seeded_shift_of_the_raw_pixels_rounded_to_uint8(tmp_path) -> None:
    data = TinyTestSet(str(tmp_path))
    sets = dict(shifted_test_sets(data, SETTINGS)())
    assert list(sets) == ["noise", "invert", "corruption_contrast_s2", "corruption_contrast_s5"]
    noise = apply_shift(
        "noise", data.test_pixels(), torch.Generator().manual_seed(derived_seed(0, "noise"))
    )
    expected = data.from_pixels((noise * 255).round().to(torch.uint8))
    assert torch.equal(sets["noise"], expected)
    contrast = apply_corruption(
        "contrast",
        5,
        data.test_pixels(),
        torch.Generator().manual_seed(derived_seed(0, "contrast", 5)),
    )
    assert torch.allclose(sets["corruption_contrast_s5"], data.from_pixels(contrast), atol=1 / 255)


def test_sets_are_cached_reused_rebuilt_when_damaged_and_keyed_by_seed(tmp_path) -> None:
    data = TinyTestSet(str(tmp_path))
    first = dict(shifted_test_sets(data, SETTINGS)())
    files = sorted((tmp_path / "shifted").glob("*.pt"))
    assert len(files) == 4
    files[0].write_bytes(b"not a tensor")  # damaged: rebuilt, the same images come back
    again = dict(shifted_test_sets(data, SETTINGS)())
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = dict(shifted_test_sets(data, OmegaConf.merge(SETTINGS, {"shift_seed": 1}))())
    assert not torch.equal(first["noise"], other["noise"])
    assert torch.equal(first["invert"], other["invert"])  # deterministic shifts ignore the seed
    assert len(list((tmp_path / "shifted").glob("*.pt"))) == 8
    # No cache directory: built on the fly, the same images.
    uncached = dict(shifted_test_sets(TinyTestSet(None), SETTINGS)())
    assert all(torch.equal(first[k], uncached[k]) for k in first)
