"""The shifted test sets of the evaluation, built from the raw test images.

Each shift (``eval.shifts``) and each corruption at each severity (``eval.corruptions`` x
``eval.severities``) is applied in pixel space ([0, 1], before normalisation and ZCA) with a
generator seeded from ``eval.shift_seed`` and the shift's name, so every run, method and
network meets exactly the same shifted images. Sets are built one at a time, when scored:
CIFAR-10's 45 corrupted copies would take 5 GiB held together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from rdd.errors import UserError
from rdd.evaluator import derived_seed
from rdd.shifts import CORRUPTIONS, SEVERITIES, SHIFTS, apply_corruption, apply_shift

ShiftedSets = Callable[[], Iterator[tuple[str, torch.Tensor]]]


def check_shift_settings(settings: Any) -> None:
    """Unknown shift or corruption names and severities outside 1-5 fail before any work."""
    for key, known in (("shifts", SHIFTS), ("corruptions", CORRUPTIONS)):
        for name in settings.get(key) or []:
            if name not in known:
                raise UserError(
                    f"unknown eval.{key} entry '{name}': choose from {', '.join(known)}"
                )
    for severity in settings.get("severities") or []:
        if severity not in SEVERITIES:
            raise UserError(f"eval.severities must lie in 1-5, got {severity}")


def shifted_names(settings: Any) -> list[str]:
    """The metric prefixes of the shifted sets, in the order they are scored."""
    corrupted = [
        corruption_name(name, severity)
        for name in settings.get("corruptions") or []
        for severity in settings.get("severities") or []
    ]
    return list(settings.get("shifts") or []) + corrupted


def corruption_name(name: str, severity: int) -> str:
    return f"corruption_{name}_s{severity}"


def shifted_test_sets(data: Any, settings: Any) -> ShiftedSets:
    """A function yielding ``(name, images in the model's input space)`` for every shifted set.

    Args:
        data: a set-up RealDataModule (``test_pixels``, ``from_pixels``).
        settings: the `eval` config (shifts, corruptions, severities, shift_seed).
    """
    check_shift_settings(settings)
    seed = int(settings.get("shift_seed", 0))

    def generator(*parts: object) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(seed, *parts))

    def sets() -> Iterator[tuple[str, torch.Tensor]]:
        pixels = data.test_pixels()
        for name in settings.get("shifts") or []:
            yield name, data.from_pixels(apply_shift(name, pixels, generator(name)))
        for name in settings.get("corruptions") or []:
            for severity in settings.get("severities") or []:
                shifted = apply_corruption(name, severity, pixels, generator(name, severity))
                yield corruption_name(name, severity), data.from_pixels(shifted)

    return sets
