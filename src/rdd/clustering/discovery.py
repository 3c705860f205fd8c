"""How well a grouping finds a known rare subgroup: its purity and recall, per class."""

from __future__ import annotations

import torch
from torch import Tensor


def rare_group_discovery(
    groups: Tensor, labels: Tensor, altered: Tensor, groups_per_class: int, num_classes: int
) -> dict[str, float]:
    """Purity and recall of the group that holds most of each class's altered images.

    For class c, the group (id ``c * groups_per_class + j``) holding the most altered images
    of the class is its "rare" group: purity is the share of altered images in it, recall the
    share of the class's altered images it holds. Both are averaged over the classes that
    have altered images (5 % purity is what a random group gets).

    Args:
        groups: (N,) group ids; labels: (N,) classes; altered: (N,) bool, the known subgroup.

    Returns:
        ``{"cluster/rare_purity": ..., "cluster/rare_recall": ...}`` in [0, 1].
    """
    purities, recalls = [], []
    for c in range(num_classes):
        in_class = labels == c
        rare = in_class & altered
        if not bool(rare.any()):
            continue
        local = groups[in_class] - c * groups_per_class
        local_rare = groups[rare] - c * groups_per_class
        sizes = torch.bincount(local, minlength=groups_per_class)
        hits = torch.bincount(local_rare, minlength=groups_per_class)
        best = int(hits.argmax())
        purities.append(float(hits[best]) / float(sizes[best]))
        recalls.append(float(hits[best]) / float(hits.sum()))
    if not purities:
        return {}
    return {
        "cluster/rare_purity": sum(purities) / len(purities),
        "cluster/rare_recall": sum(recalls) / len(recalls),
    }
