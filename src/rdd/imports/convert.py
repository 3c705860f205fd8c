"""A foreign set in rdd's input space: images de-normalised to pixels by the tool's own
normalisation, then normalised (and whitened) like rdd's real data; labels checked.

Normalisations (the ``normalization`` key of rdd.evaluate):
  ``vico``     VICO's per-dataset mean/std (``utils.get_dataset``): x = (pixels - mean) / std.
  ``mtt``      MTT's (and IDM's) per-dataset mean/std; note that MTT uses CIFAR-10's constants
               for CIFAR-100 too.
  ``zca``      MTT's ``--zca``: kornia ``ZCAWhitening(eps=0.1)`` fitted on the whole training
               split in [0, 1] (no mean/std); rdd refits that transform with :class:`rdd.data.zca.ZCA`
               (same estimator) to undo it.
  ``pixels``   [0, 1] pixels.  ``dataset``: already rdd's input space for this data config.
  ``{mean: [..], std: [..]}``  any other per-channel mean/std.

Soft labels (N, K) are probabilities when every row is non-negative and sums to 1, logits
otherwise (softmax applied); ``soft_labels=probs|logits`` says which instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.data.cache import load_dataset
from rdd.data.zca import load_or_fit
from rdd.distill.expansion import expand
from rdd.imports.formats import RawSet

CIFAR10_STATS = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# Per tool: rdd data option -> (mean, std) the tool normalises that dataset with.
TOOL_STATS = {
    "vico": {
        "mnist": ([0.1307], [0.3081]),
        "fashion_mnist": ([0.2861], [0.3530]),
        "svhn": ([0.4377, 0.4438, 0.4728], [0.1980, 0.2010, 0.1970]),
        "cifar10": CIFAR10_STATS,
        "cifar100": ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762]),
    },
    "mtt": {"cifar10": CIFAR10_STATS, "cifar100": CIFAR10_STATS, "image_folder": IMAGENET_STATS},
}
NAMED = ("vico", "mtt", "zca", "pixels", "dataset")
ASK = (
    "state it with normalization=mtt (the tool's mean/std), normalization=zca (MTT's --zca), "
    "normalization=pixels ([0, 1]), normalization=dataset (rdd's own) or "
    "normalization.mean=[..] normalization.std=[..]"
)
ZCA_EPS = 0.1  # MTT's kornia ZCAWhitening(eps=0.1)
SOFT_MODES = ("auto", "probs", "logits")


@dataclass
class ImportedSet:
    """A foreign set ready to train on.

    Attributes:
        images: (N', C, H, W) float in rdd's input space, expanded by ``factor``.
        labels: (N',) int64 or (N', K) float probabilities.
        per_class: (K,) int64 stored images per class (the budget of a random baseline).
        lr: the learned step size, or None.
        description: one line: format, where in the file, normalisation, labels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    per_class: torch.Tensor
    lr: float | None
    description: str


def convert(raw: RawSet, data: Any, normalization: Any, soft: str, factor: int) -> ImportedSet:
    """Map ``raw`` into the input space of the set-up RealDataModule ``data``."""
    if tuple(raw.images.shape[1:]) != (data.channel, *data.im_size):
        h, w = data.im_size
        raise UserError(
            f"the set's images are {'x'.join(map(str, raw.images.shape[1:]))} but {data.name} "
            f"gives {data.channel}x{h}x{w}: choose the data it was made from (data=..., "
            "data.image_size=...)"
        )
    name, images = to_rdd_space(raw, data, normalization)
    labels, label_note = check_labels(raw.labels, data.num_classes, soft)
    hard = labels if labels.ndim == 1 else labels.argmax(1)
    per_class = torch.bincount(hard, minlength=data.num_classes)
    if factor > 1:
        images, order = expand(images, torch.arange(len(labels)), factor)
        labels = labels[order]
    where = f" ({raw.detail})" if raw.detail else ""
    description = (
        f"{raw.fmt} set{where}, normalization {name}, {label_note}"
        + (f", factor {factor}" if factor > 1 else "")
        + (f", learned lr {raw.lr:.4g}" if raw.lr is not None else "")
    )
    return ImportedSet(images, labels, per_class, raw.lr, description)


def to_rdd_space(raw: RawSet, data: Any, normalization: Any) -> tuple[str, torch.Tensor]:
    """(name of the normalisation used, images in ``data``'s input space)."""
    spec = normalization if isinstance(normalization, str) else dict(normalization or {})
    if isinstance(spec, dict):
        mean, std = spec.get("mean"), spec.get("std")
        if mean is None and std is None:
            if raw.normalization is None:
                raise UserError(f"the normalisation of a {raw.fmt} file cannot be known: {ASK}")
            spec = raw.normalization
        elif mean is None or std is None:
            raise UserError("give both normalization.mean=[..] and normalization.std=[..]")
        else:
            stats = ([float(m) for m in mean], [float(s) for s in std])
            return f"mean {stats[0]} std {stats[1]}", data.from_pixels(pixels(raw, stats))
    if spec not in NAMED:
        raise UserError(f"unknown normalization '{spec}': {ASK}")
    if spec == "dataset":
        return "dataset (rdd's own)", raw.images
    if spec == "pixels":
        return "pixels", data.from_pixels(raw.images)
    if spec == "zca":
        return "zca (MTT's kornia ZCA, eps 0.1)", data.from_pixels(unwhiten(raw.images, data))
    stats = TOOL_STATS[spec].get(data.name)
    if stats is None:
        raise UserError(
            f"{spec} has no normalisation constants for {data.name} "
            f"(it has {', '.join(TOOL_STATS[spec])}): {ASK}"
        )
    return f"{spec} ({data.name} mean/std)", data.from_pixels(pixels(raw, stats))


def pixels(raw: RawSet, stats: tuple[list[float], list[float]]) -> torch.Tensor:
    """(pixels - mean) / std undone: (N, C, H, W) in [0, 1] (not clamped)."""
    mean, std = stats
    if len(mean) != raw.images.shape[1] or len(std) != len(mean) or min(std) <= 0:
        raise UserError(
            f"normalization mean/std need {raw.images.shape[1]} values each (std > 0), got "
            f"mean={mean} std={std}"
        )
    shape = (1, -1, 1, 1)
    return raw.images * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)


def unwhiten(images: torch.Tensor, data: Any) -> torch.Tensor:
    """Undo MTT's ZCA: refit it on the whole training split in [0, 1] (cached), invert it."""
    train = load_dataset(
        data.name, data.root, data.download, data.layout, data.classes, data.image_size,
        data.cache_dir,
    ).train_x  # fmt: skip
    key = json.dumps({"mtt_zca": data.name, "root": str(data.root), "size": data.image_size})
    zca = load_or_fit(train.float() / 255.0, ZCA_EPS, data.cache_dir, key)
    return zca.unwhiten(images)


def check_labels(labels: torch.Tensor, num_classes: int, soft: str) -> tuple[torch.Tensor, str]:
    """(labels to train on, a note for the output): hard (N,) in range, or soft (N, K) as
    probabilities."""
    if labels.ndim == 1:
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise UserError(
                f"the labels run from {int(labels.min())} to {int(labels.max())} but the data "
                f"has {num_classes} classes: choose the data the set was made for"
            )
        return labels, "hard labels"
    if labels.shape[1] != num_classes:
        raise UserError(
            f"the soft labels are {tuple(labels.shape)} but the data has {num_classes} classes: "
            f"soft labels must be (N, {num_classes}), one row of class scores per image"
        )
    if soft not in SOFT_MODES:
        raise UserError(f"unknown soft_labels '{soft}': choose one of {', '.join(SOFT_MODES)}")
    rows_ok = bool((labels >= 0).all()) and torch.allclose(
        labels.sum(1), torch.ones(len(labels)), atol=1e-4
    )
    if soft == "probs" and not rows_ok:
        raise UserError(
            "soft_labels=probs but some rows are negative or do not sum to 1: use "
            "soft_labels=logits (softmax is applied) or fix the file"
        )
    if soft == "probs" or (soft == "auto" and rows_ok):
        return labels, f"soft labels {tuple(labels.shape)} read as probabilities"
    return labels.softmax(1), f"soft labels {tuple(labels.shape)} read as logits (softmax)"
