"""Decode once, then load the uint8 tensors from one cache file per dataset variant."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from rdd.data import image_folder as imf
from rdd.data import sources
from rdd.data.sources import ImageData

# Bump when the decoding changes so old cache files are not reused.
CACHE_VERSION = 1
_TENSORS = ("train_x", "train_y", "test_x", "test_y")


def load_dataset(
    name: str,
    root: str | Path | None,
    download: bool = False,
    layout: str = "auto",
    classes: Sequence[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """Load a dataset, from the cache when possible.

    Args:
        name: Source name, one of :data:`rdd.data.sources.SOURCES`.
        root: Data folder (``~`` expanded; ignored for digits).
        download: Let torchvision download missing files.
        layout: ``"auto"``, ``"torchvision"`` or ``"image_folder"``.
        classes: Class names to keep, in label order; None = all.
        image_size: Resize to ``int`` or ``[h, w]``; None = native size.
        cache_dir: Folder for cache files; None disables caching.

    Returns:
        uint8 images (N, C, H, W) and int64 labels for train and test.

    Raises:
        UserError: See :func:`rdd.data.sources.load_source`.
    """
    classes = None if classes is None else [str(c) for c in classes]
    if image_size is not None and not isinstance(image_size, int):
        image_size = [int(s) for s in image_size]  # ListConfig -> plain list for the key
    # Also before a cache hit: a cache may hold what an earlier version read without checking.
    sources.check_source(name, root, download, layout, classes)
    if cache_dir is None:
        return sources.load_source(name, root, download, layout, classes, image_size)
    path = Path(cache_dir).expanduser().absolute() / cache_file_name(
        name, root, layout, classes, image_size
    )
    data = _read(path)
    if data is None:
        data = sources.load_source(name, root, download, layout, classes, image_size)
        _write(path, data)
    return data


def cache_file_name(
    name: str,
    root: str | Path | None,
    layout: str,
    classes: list[str] | None,
    image_size: int | list[int] | None,
) -> str:
    """``<name>-<sha1 prefix>.pt``; the hash covers everything that changes the decoded data.

    For image folders the number of image files and the newest mtime are included, so
    adding, removing or editing images gives a new key (and a rebuild).
    """
    path = sources.expand_root(root)
    used = sources.resolve_layout(name, path, layout)
    key: dict = {
        "version": CACHE_VERSION,
        "name": name,
        "root": None if used == "bundled" else str(path),
        "layout": used,
        "classes": classes,
        "image_size": image_size,
    }
    if used == "image_folder" and imf.is_image_folder(path):
        names = imf.resolve_classes(path, classes, sources.KNOWN_CLASSES.get(name))
        key["files"], key["newest_mtime"] = imf.fingerprint(path, names)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:16]}.pt"


def _read(path: Path) -> ImageData | None:
    """The cached data, or None when absent or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        data = ImageData(*(blob[k] for k in _TENSORS), classes=list(blob["classes"]))
        _check(data)
    except Exception as e:  # noqa: BLE001 - any broken cache file is just rebuilt
        warnings.warn(f"cache file '{path}' is unreadable ({e!r}); rebuilding it", stacklevel=3)
        return None
    return data


def _check(data: ImageData) -> None:
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64 or len(x) != len(y):
            raise ValueError("unexpected tensor shapes or dtypes")


def _write(path: Path, data: ImageData) -> None:
    """Write atomically (temp file in the same folder + ``os.replace``); failures only warn."""
    blob = {k: getattr(data, k) for k in _TENSORS} | {"classes": list(data.classes)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache may be shared
        os.replace(tmp, path)
    except OSError as e:
        # A read-only or full disk should not stop a run that already has its data.
        warnings.warn(
            f"could not write cache file '{path}' ({e}); continuing without it", stacklevel=3
        )
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
