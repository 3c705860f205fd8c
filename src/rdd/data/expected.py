"""What a named dataset holds, so that a root that holds something else is noticed at start.

A folder with 3 of CIFAR-10's 10 class folders, given as ``data=cifar10 data.root=...``,
used to distil a 3-class "cifar10" in silence. torchvision checks its own files (checksums);
an image-folder tree under a dataset's name is checked here: its class folders before
anything is decoded (a missing or extra class is an error, ``data.classes`` keeps a subset on
purpose), its image counts once read (far fewer images than the dataset has is a warning
printed at start, beside the classes and images read: a partial copy is a choice too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdd.config.errors import UserError
from rdd.data.image_folder import canonical_name


@dataclass(frozen=True)
class Expected:
    """A dataset's published size: classes, training and test images."""

    classes: int
    train: int
    test: int


EXPECTED = {
    "mnist": Expected(10, 60_000, 10_000),
    "fashion_mnist": Expected(10, 60_000, 10_000),
    "svhn": Expected(10, 73_257, 26_032),
    "cifar10": Expected(10, 50_000, 10_000),
    "cifar100": Expected(100, 50_000, 10_000),
}
# Fewer images than this share of what the dataset holds (for the classes read) are a warning.
FEW_IMAGES = 0.5
# Class names quoted in a message, at most (CIFAR-100 has 100).
SHOWN = 5


def check_class_folders(
    name: str,
    root: Path,
    folders: Sequence[str],
    requested: Sequence[str] | None,
    known: Sequence[str] | None = None,
) -> None:
    """A named dataset's image-folder tree must hold all of its classes, and only them.

    Args:
        name: the source (``cifar10``, ...); other names (``image_folder``) are not checked.
        root: the tree's root, for the message; folders: its class folders (``train/<class>``).
        requested: ``data.classes``: a subset chosen on purpose, then not checked here (a
            missing one is reported when the files are listed).
        known: the dataset's class names, to name the missing ones (CIFAR-10, Fashion-MNIST).

    Raises:
        UserError: the tree holds fewer or more classes than the dataset.
    """
    expected = EXPECTED.get(name)
    if expected is None or requested is not None or len(folders) == expected.classes:
        return
    if len(folders) > expected.classes:
        raise UserError(
            f"data.root '{root}' holds {len(folders)} class folders but {name} has "
            f"{expected.classes}: point data.root at {name}'s train/ and test/ folders, or "
            "use data=image_folder for another dataset"
        )
    missing = missing_classes(folders, known)
    named = f" (missing: {shortlist(missing)})" if missing else ""
    raise UserError(
        f"data.root '{root}' holds {len(folders)} of {name}'s {expected.classes} class "
        f"folders{named}: point data.root at the whole dataset, or set "
        f"data.classes=[{','.join(folders)}] to use these classes on purpose"
    )


def missing_classes(folders: Sequence[str], known: Sequence[str] | None) -> list[str]:
    """The known class names without a folder (compared ignoring case and punctuation)."""
    have = {canonical_name(f) for f in folders}
    return [c for c in known or () if canonical_name(c) not in have]


def shortlist(names: Sequence[str]) -> str:
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def size_warning(data: Any) -> str | None:
    """Why the images read look like a partial copy of the named dataset, or None.

    Args:
        data: a set-up RealDataModule (``name``, ``num_classes``, train/val/test labels).
    """
    expected = EXPECTED.get(data.name)
    if expected is None:
        return None
    share = data.num_classes / expected.classes  # data.classes may keep a subset
    train = len(data.train_y) + len(data.val_y)
    for split, have, full in (
        ("training", train, expected.train),
        ("test", len(data.test_y), expected.test),
    ):
        wanted = round(full * share)
        if have < FEW_IMAGES * wanted:
            return (
                f"{data.name} has {wanted} {split} images in these {data.num_classes} classes but "
                f"data.root holds {have}: check that the copy is complete (a partial one "
                "distils and scores on what is there)"
            )
    return None


def data_line(data: Any) -> str:
    """What was read, for the run's start: classes, images per split, their shape, the root."""
    shape = "x".join(str(s) for s in (data.channel, *data.im_size))
    where = f" from {data.root}" if data.root else ""
    return (
        f"data: {data.name}{where}: {data.num_classes} classes, {len(data.train_y)} train / "
        f"{len(data.val_y)} val / {len(data.test_y)} test images of {shape}"
    )
