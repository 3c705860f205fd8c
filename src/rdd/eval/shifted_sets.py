"""The shifted test sets of the evaluation, built from the raw test images.

Each shift (``eval.shifts``) and each corruption at each severity (``eval.corruptions`` x
``eval.severities``) is applied in pixel space ([0, 1], before normalisation and ZCA) with a
generator seeded from ``eval.shift_seed`` and the shift's name, so every run, method and
network meets exactly the same shifted images. Like CIFAR-10-C's files, every shifted set is
stored as uint8 images: it is cached on disk (``data.cache_dir``, keyed by a digest of the
test images, the shift and the seed), so a sweep builds each set once instead of once per run
(all 48 sets of CIFAR-10 take ~100 s to build on one CPU core, 1.4 GiB to cache). Sets are
loaded one at a time, when scored: held together as floats they would take 5 GiB. With
``eval.corruptions_root`` the corruptions are the published CIFAR-10-C / CIFAR-100-C images
instead (rdd.eval.official_corruptions), under the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.eval.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    SHIFTS,
    apply_corruption,
    apply_shift,
    quantise,
)
from rdd.eval.official_corruptions import OfficialCorruptions, check_names
from rdd.utils.io import load_or_build_tensor, tensor_digest
from rdd.utils.seeds import derived_seed

ShiftedSets = Callable[[], Iterator[tuple[str, torch.Tensor]]]


def check_shift_settings(settings: Any) -> None:
    """Unknown shift or corruption names and severities outside 1-5 fail before any work."""
    root = settings.get("corruptions_root")
    if root:  # the official arrays: any corruption that has its file
        check_names(root, list(settings.get("corruptions") or []))
    for key, known in (("shifts", SHIFTS), ("corruptions", CORRUPTIONS)):
        if key == "corruptions" and root:
            continue
        for name in settings.get(key) or []:
            if name not in known:
                raise UserError(
                    f"unknown eval.{key} entry '{name}': choose from {', '.join(known)}"
                )
    for severity in settings.get("severities") or []:
        if severity not in SEVERITIES:
            raise UserError(f"eval.severities must lie in 1-5, got {severity}")


def corruption_name(name: str, severity: int) -> str:
    return f"corruption_{name}_s{severity}"


def shifted_test_sets(data: Any, settings: Any) -> ShiftedSets:
    """A function yielding ``(name, images in the model's input space)`` for every shifted set.

    Args:
        data: a set-up RealDataModule (``test_uint8``, ``test_pixels``, ``from_pixels``,
            ``cache_dir``).
        settings: the `eval` config (shifts, corruptions, severities, shift_seed, and
            corruptions_root: read the corruptions from the official arrays there).
    """
    check_shift_settings(settings)
    seed = int(settings.get("shift_seed", 0))
    official = None
    if settings.get("corruptions_root"):  # checked now, not after hours of distillation
        names = list(settings.get("corruptions") or [])
        official = OfficialCorruptions(
            settings.corruptions_root, names, data.test_uint8, data.test_y
        )

    def sets() -> Iterator[tuple[str, torch.Tensor]]:
        digest = tensor_digest(data.test_uint8, str(tuple(data.test_uint8.shape)))
        cache = Path(data.cache_dir).expanduser() / "shifted" if data.cache_dir else None
        for name, severity in shift_jobs(settings):
            label = name if severity is None else corruption_name(name, severity)
            if official is not None and severity is not None:
                yield label, data.from_pixels(official.images(name, severity))
                continue
            path = cache / f"{digest}-{label}-seed{seed}.pt" if cache else None
            build = partial(make_shifted, data, name, severity, seed)
            images = load_or_build_tensor(path, build, lambda x: x.dtype == torch.uint8)
            yield label, data.from_pixels(images)

    return sets


def shift_jobs(settings: Any) -> list[tuple[str, int | None]]:
    """(name, severity) of every shifted set, severity None for the fixed shifts."""
    jobs: list[tuple[str, int | None]] = [(name, None) for name in settings.get("shifts") or []]
    jobs += [
        (name, severity)
        for name in settings.get("corruptions") or []
        for severity in settings.get("severities") or []
    ]
    return jobs


def make_shifted(data: Any, name: str, severity: int | None, seed: int) -> torch.Tensor:
    """The uint8 (N, C, H, W) shifted copy of the test images, from its own seeded generator."""
    pixels = data.test_pixels()
    if severity is None:
        generator = torch.Generator().manual_seed(derived_seed(seed, name))
        return quantise(apply_shift(name, pixels, generator))
    generator = torch.Generator().manual_seed(derived_seed(seed, name, severity))
    return quantise(apply_corruption(name, severity, pixels, generator))
