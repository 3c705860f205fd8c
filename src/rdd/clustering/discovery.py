"""How well unsupervised groups find a known rare subgroup (``data.subgroup``): purity, recall.

With ``data.subgroup`` the data module knows which training images were altered; a clustering
never sees that mask. To score a clustering against it, take in every class the group that
holds most of the class's altered images (the group a robust risk would have to up-weight):

- purity: the share of altered images in that group (the subgroup's share of the class,
  5% by default, is no better than chance);
- recall: the share of the class's altered images that land in that group (1/k is what a
  split blind to the subgroup gives on average).

Both are averaged over the classes that have altered images.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_inputs(
    groups: Tensor, labels: Tensor, altered: Tensor, groups_per_class: int, num_classes: int
) -> None:
    if groups_per_class < 1 or num_classes < 1:
        raise ValueError(
            f"groups_per_class and num_classes must be >= 1, got {groups_per_class}, {num_classes}"
        )
    if groups.dim() != 1 or labels.shape != groups.shape or altered.shape != groups.shape:
        raise ValueError(
            f"groups, labels and altered must be (N,) of one length, got {tuple(groups.shape)}, "
            f"{tuple(labels.shape)}, {tuple(altered.shape)}"
        )
    if altered.dtype != torch.bool:
        raise ValueError(f"altered must be a bool mask, got {altered.dtype}")
    local = groups - labels * groups_per_class
    if groups.numel() and (local.min() < 0 or local.max() >= groups_per_class):
        raise ValueError(
            f"group ids must be class * {groups_per_class} + j with j in [0, {groups_per_class}): "
            f"some image's group is not one of its own class's"
        )


def rare_group_of_class(local: Tensor, altered: Tensor, groups_per_class: int) -> int:
    """The group of one class that holds most of its altered images (ties: the lowest id).

    Args:
        local: Group of every image of the class within the class, (n,) int64 in [0, k).
        altered: Which of them are altered, (n,) bool.
        groups_per_class: k.
    """
    caught = torch.bincount(local[altered], minlength=groups_per_class)
    return int(caught.argmax())  # the first maximum on ties


def class_rare_group(local: Tensor, altered: Tensor, groups_per_class: int) -> tuple[float, float]:
    """Purity and recall of one class's group that holds most of its altered images.

    Args:
        local: Group of every image of the class within the class, (n,) int64 in [0, k).
        altered: Which of them are altered, (n,) bool; at least one must be.
        groups_per_class: k.

    Returns:
        ``(purity, recall)``; ties go to the lowest group id.
    """
    best = rare_group_of_class(local, altered, groups_per_class)
    size = int((local == best).sum())
    caught = int((local[altered] == best).sum())
    return caught / size, caught / int(altered.sum())


def rare_group_discovery(
    groups: Tensor, labels: Tensor, altered: Tensor, groups_per_class: int, num_classes: int
) -> dict[str, float]:
    """Mean over classes of the rare group's purity and recall (see the module docstring).

    Args:
        groups: Group of every image, (N,) int64, ``class * groups_per_class + j``.
        labels: Class of every image, (N,) int64 in [0, num_classes).
        altered: Which images belong to the rare subgroup, (N,) bool.
        groups_per_class: Groups per class k.
        num_classes: Number of classes C.

    Returns:
        ``{"cluster/rare_purity": ..., "cluster/rare_recall": ...}``, means over the classes
        with at least one altered image.

    Raises:
        ValueError: On mismatched shapes, a group outside its image's class, or no altered
            image at all.
    """
    groups, labels, altered = (t.detach().cpu() for t in (groups, labels, altered))
    groups, labels = groups.long(), labels.long()
    _check_inputs(groups, labels, altered, groups_per_class, num_classes)
    purities, recalls = [], []
    for c in range(num_classes):
        mine = labels == c
        if not altered[mine].any():  # nothing to find in this class
            continue
        local = groups[mine] - c * groups_per_class
        purity, recall = class_rare_group(local, altered[mine], groups_per_class)
        purities.append(purity)
        recalls.append(recall)
    if not purities:
        raise ValueError("no image is altered: rare_group_discovery needs data.subgroup's mask")
    return {
        "cluster/rare_purity": sum(purities) / len(purities),
        "cluster/rare_recall": sum(recalls) / len(recalls),
    }
