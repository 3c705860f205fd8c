"""Whole datasets as uint8 tensors: scikit-learn digits, torchvision datasets, image folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rdd.config.errors import UserError
from rdd.data import image_folder as imf
from rdd.data.expected import check_class_folders

TORCHVISION_SOURCES = ("mnist", "fashion_mnist", "svhn", "cifar10", "cifar100")
SOURCES = ("digits", *TORCHVISION_SOURCES, "image_folder")
LAYOUTS = ("auto", "torchvision", "image_folder")

# What torchvision keeps under root, for error messages.
_TORCHVISION_FILES = {
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
    "svhn": "train_32x32.mat, test_32x32.mat",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}
# Standard label order, used when an image folder's class folders carry exactly these names.
# CIFAR-100's standard order is alphabetical, so sorted folder names already match it.
# fmt: off
KNOWN_CLASSES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}
# fmt: on
_GRAYSCALE = ("mnist", "fashion_mnist")
DIGITS_TEST_FRACTION = 0.2


@dataclass
class ImageData:
    """A whole dataset in memory.

    Attributes:
        train_x: uint8 (N, C, H, W).
        train_y: int64 (N,), labels in ``[0, len(classes))``.
        test_x: uint8 (M, C, H, W).
        test_y: int64 (M,).
        classes: Class names; index = label.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]


def parse_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``int`` or ``[h, w]`` (or None) to ``(h, w)`` (or None)."""
    if image_size is None:
        return None
    size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise UserError(f"data.image_size={image_size!r} is invalid: use a positive int or [h, w]")
    return size[0], size[1]


def expand_root(root: str | Path | None) -> Path | None:
    """Expand ``~`` and make absolute."""
    # abspath also folds "..", so equivalent spellings share one cache key.
    return None if root is None else Path(os.path.abspath(os.path.expanduser(str(root))))


def resolve_layout(name: str, root: Path | None, layout: str) -> str:
    """The layout actually read: ``"bundled"`` (digits), ``"torchvision"`` or ``"image_folder"``.

    Raises:
        UserError: Unknown name or layout, or a layout the source cannot have.
    """
    if name not in SOURCES:
        raise UserError(f"unknown dataset '{name}': set data.name to one of {', '.join(SOURCES)}")
    if layout not in LAYOUTS:
        raise UserError(f"unknown data.layout '{layout}': use one of {', '.join(LAYOUTS)}")
    if name == "digits":
        return "bundled"
    if name == "image_folder":
        if layout == "torchvision":
            raise UserError(
                "data.layout=torchvision does not apply to data.name=image_folder: "
                "use data.layout=auto"
            )
        return "image_folder"
    if layout == "auto":
        return "image_folder" if root is not None and imf.is_image_folder(root) else "torchvision"
    return layout


def load_source(
    name: str,
    root: str | Path | None,
    download: bool = False,
    layout: str = "auto",
    classes: Sequence[str] | None = None,
    image_size: int | Sequence[int] | None = None,
) -> ImageData:
    """Decode a whole dataset (no caching; see :func:`rdd.data.load_dataset`).

    Args:
        name: One of :data:`SOURCES`.
        root: Data folder (ignored for digits); ``~`` is expanded.
        download: Let torchvision download missing files.
        layout: ``"auto"``, ``"torchvision"`` or ``"image_folder"``.
        classes: Class names to keep, in label order (None = all, standard order).
        image_size: Resize to ``int`` or ``[h, w]``; None keeps the native size.

    Returns:
        The dataset with uint8 images (N, C, H, W).

    Raises:
        UserError: Bad name, missing or malformed root, unreadable image, and so on.
    """
    used = check_source(name, root, download, layout, classes)
    path = expand_root(root)
    size = parse_image_size(image_size)
    if used == "bundled":
        return _resize(select_classes(load_digits(), classes), size)
    if used == "image_folder":
        return _load_folder(name, path, classes, size)
    return _resize(select_classes(_load_torchvision(name, path, download), classes), size)


def check_source(
    name: str,
    root: str | Path | None,
    download: bool = False,
    layout: str = "auto",
    classes: Sequence[str] | None = None,
) -> str:
    """What can be checked of a source without decoding it (a directory listing, not the
    minutes a decode takes): its name and layout, that the root exists, and that an image
    folder under a dataset's name holds that dataset's classes (rdd.data.expected).

    Returns:
        The layout that will be read (:func:`resolve_layout`).

    Raises:
        UserError: as :func:`load_source`, for all that needs no decoding.
    """
    path = expand_root(root)
    used = resolve_layout(name, path, layout)
    if used == "bundled":
        return used
    path = _check_root(name, path, download)
    if used == "image_folder":
        if not imf.is_image_folder(path):
            raise UserError(
                f"data root '{path}' has the wrong layout: expected {imf.expected_layout(path)}; "
                "set data.root to such a folder"
            )
        folders = imf.resolve_classes(path, None, KNOWN_CLASSES.get(name))
        check_class_folders(name, path, folders, classes, KNOWN_CLASSES.get(name))
    return used


def load_digits() -> ImageData:
    """scikit-learn's 8x8 digits with a fixed stratified 80/20 train/test split.

    The split uses ``RandomState(0)`` and does not depend on any run seed, so every run
    and method sees the same test set.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    rng = np.random.RandomState(0)
    is_test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(bunch.target == c)
        is_test[rng.permutation(idx)[: round(DIGITS_TEST_FRACTION * len(idx))]] = True
    test = torch.from_numpy(is_test)
    classes = [str(c) for c in range(10)]
    return ImageData(x[~test], y[~test], x[test], y[test], classes)


def _check_root(name: str, root: Path | None, download: bool) -> Path:
    hint = _layout_hint(name, None)
    if root is None:
        raise UserError(
            f"data.root is not set for dataset '{name}': set data.root=<dir holding {hint}>"
        )
    if not root.exists() and not (download and name in TORCHVISION_SOURCES):
        fix = " or data.download=true" if name in TORCHVISION_SOURCES else ""
        raise UserError(
            f"data root '{root}' does not exist: set data.root=<dir holding {hint}>{fix}"
        )
    return root


def _layout_hint(name: str, root: Path | None) -> str:
    hint = imf.expected_layout(root)
    if name in _TORCHVISION_FILES:
        hint += f" or the torchvision files ({_TORCHVISION_FILES[name]})"
    return hint


def _load_folder(
    name: str, root: Path, classes: Sequence[str] | None, size: tuple[int, int] | None
) -> ImageData:
    names = imf.resolve_classes(root, classes, KNOWN_CLASSES.get(name))
    files = imf.list_files(root, names)
    mode = "L" if name in _GRAYSCALE else "RGB"
    out = []
    for split in imf.SPLITS:
        paths, labels = files[split]
        x = imf.decode_all(paths, size, mode, desc=f"decoding {name} {split}")
        out += [torch.from_numpy(x), torch.tensor(labels, dtype=torch.int64)]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise UserError(
            f"train images are {tuple(out[0].shape[2:])} but test images "
            f"{tuple(out[2].shape[2:])} under '{root}': set data.image_size=<int or [h,w]>"
        )
    return ImageData(*out, classes=list(names))


def _load_torchvision(name: str, root: Path, download: bool) -> ImageData:
    try:
        train = _torchvision_split(name, root, True, download)
        test = _torchvision_split(name, root, False, download)
    except (RuntimeError, OSError) as e:
        # torchvision raises RuntimeError("Dataset not found ...") for missing files and
        # URLError (an OSError) or RuntimeError("Error downloading ...") for failed downloads.
        if isinstance(e, RuntimeError) and "not found" in str(e).lower():
            raise UserError(
                f"dataset '{name}' not found under '{root}': expected {_layout_hint(name, root)}; "
                "set data.root to the folder holding them or data.download=true"
            ) from None
        if not download:
            raise
        msg = str(e).replace("\n", " ")
        raise UserError(
            f"downloading '{name}' into '{root}' failed ({msg}): check the network, or put "
            "the files there by hand and set data.download=false"
        ) from None
    return ImageData(train[0], train[1], test[0], test[1], classes=train[2])


def _torchvision_split(
    name: str, root: Path, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read the raw arrays of one split (no per-image PIL round trip).

    Returns:
        uint8 images (N, C, H, W), int64 labels (N,), class names.
    """
    import torchvision.datasets as tvd

    if name == "svhn":
        ds = tvd.SVHN(str(root), split="train" if train else "test", download=download)
        # SVHN's .data is already NCHW; torchvision maps label 10 to 0.
        x, y, classes = (
            torch.from_numpy(ds.data),
            torch.from_numpy(ds.labels),
            [str(i) for i in range(10)],
        )
    elif name in _GRAYSCALE:
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        ds = cls(str(root), train=train, download=download)
        x, y, classes = ds.data.unsqueeze(1), ds.targets, list(ds.classes)
    else:
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        ds = cls(str(root), train=train, download=download)
        x, y, classes = (
            torch.from_numpy(ds.data).permute(0, 3, 1, 2),
            torch.tensor(ds.targets),
            list(ds.classes),
        )
    return x.contiguous().to(torch.uint8), y.to(torch.int64), classes


def select_classes(data: ImageData, classes: Sequence[str] | None) -> ImageData:
    """Keep only the named classes, relabelled ``0..len(classes)-1`` in the given order."""
    if classes is None:
        return data
    classes = [str(c) for c in classes]
    missing = [c for c in classes if c not in data.classes]
    if missing or len(set(classes)) != len(classes) or not classes:
        raise UserError(
            f"data.classes={classes} is invalid (unknown or repeated: {missing or 'repeats'}): "
            f"use distinct names from {data.classes}"
        )
    old = torch.tensor([data.classes.index(c) for c in classes])
    mapping = torch.full((len(data.classes),), -1, dtype=torch.int64)
    mapping[old] = torch.arange(len(classes))
    parts = []
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        keep = mapping[y] >= 0
        parts += [x[keep], mapping[y[keep]]]
    return ImageData(*parts, classes=classes)


def _resize(data: ImageData, size: tuple[int, int] | None) -> ImageData:
    if size is None or tuple(data.train_x.shape[2:]) == size:
        return data
    return ImageData(
        _resize_uint8(data.train_x, size),
        data.train_y,
        _resize_uint8(data.test_x, size),
        data.test_y,
        data.classes,
    )


def _resize_uint8(x: torch.Tensor, size: tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (N, C, H, W), in chunks to bound float memory."""
    out = [
        F.interpolate(part.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in x.split(chunk)
    ]
    return torch.cat(out) if out else x.new_zeros((0, x.shape[1], *size))
