"""Read ``root/{train,test}/<class>/*.jpg`` trees into uint8 arrays.

Decoding tens of thousands of small JPEGs is dominated by per-file Python overhead, so
large trees are decoded in a process pool (one worker per core) in chunks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from rdd.config.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "test")
# Below this many files a pool costs more (worker start-up) than it saves.
_POOL_MIN_FILES = 2000
_CHUNK = 500


def is_image_folder(root: Path) -> bool:
    """Whether ``root`` has ``train/`` and ``test/`` folders with class subfolders."""
    return all((root / s).is_dir() for s in SPLITS) and bool(_subdirs(root / "train"))


def expected_layout(root: Path | None) -> str:
    """Human-readable description of the layout (relative when ``root`` is None)."""
    pre = "" if root is None else f"{root}/"
    return f"{pre}train/<class>/*.jpg and {pre}test/<class>/*.jpg"


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[os.DirEntry]:
    entries = [e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    entries = [e for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(entries, key=lambda e: e.name)


def canonical_name(name: str) -> str:
    # "T-shirt/top" cannot be a folder name; compare names ignoring case and punctuation.
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_classes(
    root: Path, classes: Sequence[str] | None, known: Sequence[str] | None = None
) -> list[str]:
    """Class folder names in label order.

    Args:
        root: Image-folder root.
        classes: Explicit folder names (their order is the label order), or None for all
            subfolders of ``root/train``.
        known: The standard class names of a known dataset: when the folders are exactly
            these (ignoring case and punctuation), the standard order is used.

    Returns:
        Folder names; index = label.
    """
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes) or not classes:
            raise UserError(f"data.classes={classes} must be a non-empty list without repeats")
        return classes
    folders = _subdirs(root / "train")
    if known is not None:
        by_canon = {canonical_name(f): f for f in folders}
        if len(by_canon) == len(folders) and set(by_canon) == {canonical_name(k) for k in known}:
            return [by_canon[canonical_name(k)] for k in known]
    return folders


def list_files(root: Path, classes: Sequence[str]) -> dict[str, tuple[list[str], list[int]]]:
    """Image paths and labels per split.

    Returns:
        ``{split: (paths, labels)}``, paths sorted by class then file name.

    Raises:
        UserError: A class folder is missing or holds no images.
    """
    out: dict[str, tuple[list[str], list[int]]] = {}
    for split in SPLITS:
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            folder = root / split / name
            if not folder.is_dir():
                have = ", ".join(_subdirs(root / split)[:10])
                raise UserError(
                    f"class '{name}' is missing from {root / split} (it has: {have}): "
                    "fix data.classes or add the folder"
                )
            files = _image_files(folder)
            if not files:
                raise UserError(
                    f"class folder '{folder}' holds no images ({'/'.join(IMAGE_EXTENSIONS)}): "
                    "add images or leave the class out of data.classes"
                )
            paths += [e.path for e in files]
            labels += [label] * len(files)
        out[split] = (paths, labels)
    return out


def fingerprint(root: Path, classes: Sequence[str]) -> tuple[int, float]:
    """Number of image files and newest mtime under the used class folders.

    Used in the cache key so that adding, removing or editing images rebuilds the cache.
    Missing folders are skipped here; :func:`list_files` reports them.
    """
    count, newest = 0, 0.0
    for split in SPLITS:
        for name in classes:
            folder = root / split / name
            if not folder.is_dir():
                continue
            newest = max(newest, folder.stat().st_mtime)
            for e in _image_files(folder):
                count += 1
                newest = max(newest, e.stat().st_mtime)
    return count, newest


def decode_image(path: str, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    """Decode one image file.

    Args:
        path: Image file.
        size: ``(h, w)`` to resize to, or None to keep the file's size.
        mode: PIL mode, ``"RGB"`` or ``"L"``.

    Returns:
        uint8 array (H, W, C).

    Raises:
        UserError: The file is not a readable image.
    """
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(
            f"cannot read image '{path}' ({type(e).__name__}): delete or replace the file"
        ) from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode_chunk(paths: list[str], size: tuple[int, int] | None, mode: str) -> list[np.ndarray]:
    return [decode_image(p, size, mode) for p in paths]


def decode_all(
    paths: list[str], size: tuple[int, int] | None, mode: str, desc: str, workers: int | None = None
) -> np.ndarray:
    """Decode images into one array, in a process pool for large lists.

    Returns:
        uint8 array (N, C, H, W).

    Raises:
        UserError: A file is unreadable, or sizes differ and ``size`` is None.
    """
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=len(paths) < _POOL_MIN_FILES)
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    arrays: list[np.ndarray] = []
    with bar:
        if workers <= 1 or len(paths) < _POOL_MIN_FILES:
            for chunk in chunks:
                arrays += _decode_chunk(chunk, size, mode)
                bar.update(len(chunk))
        else:
            sizes, modes = [size] * len(chunks), [mode] * len(chunks)
            with ProcessPoolExecutor(workers) as pool:
                for chunk, out in zip(
                    chunks, pool.map(_decode_chunk, chunks, sizes, modes), strict=True
                ):
                    arrays += out
                    bar.update(len(chunk))
    _check_same_size(paths, arrays)
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))


def _check_same_size(paths: list[str], arrays: list[np.ndarray]) -> None:
    first = arrays[0].shape
    for path, arr in zip(paths, arrays, strict=True):
        if arr.shape != first:
            raise UserError(
                f"images differ in size ('{paths[0]}' is {first[0]}x{first[1]}, '{path}' is "
                f"{arr.shape[0]}x{arr.shape[1]}): set data.image_size=<int or [h,w]> to resize them"
            )
