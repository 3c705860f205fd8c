"""The published CIFAR-10-C / CIFAR-100-C arrays (Hendrycks & Dietterich, ICLR 2019), read
in place of regenerated corruptions when ``eval.corruptions_root`` names their folder, so
corruption accuracies are comparable with published figures.

The folder holds ``labels.npy`` and one ``<corruption>.npy`` per corruption: uint8
(5 N, 32, 32, 3), the N test images at severities 1-5 stacked in blocks of N (N = 10,000).
Everything is checked against the run's test set when the evaluation is resolved (before any
distillation); the arrays are memory-mapped, so only one severity block is read at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdd.config.errors import UserError

LABELS = "labels.npy"
# The released files: 15 benchmark corruptions and the 4 held-out ones.
RELEASED = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "gaussian_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "spatter",
    "saturate",
)


def _open(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(
            f"no {path.name} in eval.corruptions_root={path.parent}: point it at the CIFAR-10-C "
            f"(or CIFAR-100-C) folder, or drop the corruption from eval.corruptions "
            f"(released: {', '.join(RELEASED)})"
        )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read '{path}' ({err}): re-download it") from None


def check_names(root: str, names: list[str]) -> None:
    """The folder has labels.npy and every requested corruption its file (names are file
    stems, no paths)."""
    _open(Path(root).expanduser() / LABELS)
    for name in names:
        if not name or Path(name).name != name or name == Path(LABELS).stem:
            raise UserError(f"eval.corruptions entry '{name}' is not a corruption file name")
        _open(Path(root).expanduser() / f"{name}.npy")


class OfficialCorruptions:
    """Severity blocks of the official arrays, checked against a test set.

    Args:
        root: the CIFAR-10-C / CIFAR-100-C folder.
        names: the corruptions to read (``<name>.npy`` each).
        test_uint8: (N, C, H, W) uint8 test images of the run.
        test_y: (N,) their labels, in the order the arrays were made from.

    Raises:
        UserError: a file is missing or unreadable, of the wrong shape or dtype, or the
            labels are not the test set's (another dataset, a class subset, another order).
    """

    def __init__(
        self, root: str, names: list[str], test_uint8: torch.Tensor, test_y: torch.Tensor
    ) -> None:
        self.root = Path(root).expanduser()
        n, c, h, w = test_uint8.shape
        self.n = n
        expected = (5 * n, h, w, c)
        labels = _open(self.root / LABELS)
        if labels.shape != (5 * n,) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(
                f"{self.root / LABELS} holds {labels.dtype} {labels.shape}, not 5 x {n} integer "
                "labels of this test set: eval.corruptions_root must match data (CIFAR-10-C for "
                "data=cifar10 with all classes)"
            )
        target = test_y.cpu().numpy()
        for block in range(5):
            if not np.array_equal(labels[block * n : (block + 1) * n], target):
                raise UserError(
                    f"{self.root / LABELS} (severity {block + 1}) does not list this test set's "
                    "labels in its order: eval.corruptions_root must match data (CIFAR-10-C for "
                    "cifar10, CIFAR-100-C for cifar100, read from cifar-*-python batches)"
                )
        self.arrays: dict[str, np.ndarray] = {}
        check_names(str(self.root), names)
        for name in names:
            array = _open(self.root / f"{name}.npy")
            if array.shape != expected or array.dtype != np.uint8:
                raise UserError(
                    f"{self.root / name}.npy holds {array.dtype} {array.shape}, not uint8 "
                    f"{expected} (5 severities of this test set, H x W x C): re-download it or "
                    "set data.image_size to the arrays' size"
                )
            self.arrays[name] = array

    def images(self, name: str, severity: int) -> torch.Tensor:
        """(N, C, H, W) uint8: block ``severity`` (1-5) of ``<name>.npy``."""
        block = self.arrays[name][(severity - 1) * self.n : severity * self.n]
        # A writable copy of the memory-mapped block (torch refuses read-only memory).
        return torch.from_numpy(np.array(block)).permute(0, 3, 1, 2).contiguous()


def corruption_source(settings: Any) -> str:
    """What eval_details.json says the corruption accuracies were scored on."""
    root = settings.get("corruptions_root")
    if root:
        return f"official arrays in {Path(root).expanduser().absolute()}"
    return "regenerated by rdd.eval.corruptions (CIFAR-10-C's parameters, not its images)"
