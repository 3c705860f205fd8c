"""Accuracy per class and per group, as torchmetrics metrics whose states are sums.

Hits and counts are what gets reduced across processes (``dist_reduce_fx="sum"``, or
``Metric.merge_state``), never per-process accuracies: a mean of means would weight a small
shard like a large one. Accuracies are in percent.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy


class GroupAccuracy(Metric):
    """Accuracy of every non-empty group among ``num_groups`` group ids.

    Args:
        num_groups: group ids lie in [0, num_groups); the states have this length so that
            every process reduces tensors of one shape.
        **kwargs: torchmetrics ``Metric`` options (e.g. ``sync_on_compute``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False  # update() only adds to the sums

    hits: Tensor
    counts: Tensor

    def __init__(self, num_groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"GroupAccuracy needs num_groups >= 1, got {num_groups!r}")
        self.num_groups = num_groups
        zeros = torch.zeros(num_groups, dtype=torch.long)
        self.add_state("hits", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("counts", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, correct: Tensor, groups: Tensor) -> None:
        """Add a batch.

        Args:
            correct: (N,) bool, whether each sample was classified right.
            groups: (N,) int group ids in [0, num_groups).
        """
        _check_pairs(correct, groups)
        if groups.numel() and not 0 <= int(groups.min()) <= int(groups.max()) < self.num_groups:
            raise ValueError(
                f"group ids must lie in [0, {self.num_groups}), got "
                f"[{int(groups.min())}, {int(groups.max())}]"
            )
        groups = groups.to(self.counts.device).long()
        self.hits.index_add_(0, groups, correct.to(self.hits.device).long())
        self.counts.index_add_(0, groups, torch.ones_like(groups))

    def compute(self) -> Tensor:
        """(G',) float32 accuracies of the groups that have samples, in group-id order."""
        present = self.counts > 0
        return (100.0 * self.hits[present].double() / self.counts[present]).float()


def group_accuracy(correct: Tensor, groups: Tensor) -> Tensor:
    """Accuracy in percent of every non-empty group (one pass of :class:`GroupAccuracy`).

    Args:
        correct: (N,) bool, whether each sample was classified right.
        groups: (N,) int64 group ids >= 0.

    Returns:
        (G',) float32 accuracies of the groups that have samples, in group-id order.
    """
    _check_pairs(correct, groups)
    if groups.numel() == 0:
        return torch.zeros(0)
    if int(groups.min()) < 0:
        raise ValueError(f"group ids must be >= 0, got {int(groups.min())}")
    # One call, one process: there is nothing to synchronise.
    metric = GroupAccuracy(int(groups.max()) + 1, sync_on_compute=False).to(groups.device)
    metric.update(correct, groups)
    return metric.compute()


class ClassAccuracy(MetricCollection):
    """Overall accuracy and accuracy of every class (torchmetrics' ``MulticlassAccuracy``,
    micro and per-class, both sums of true positives and counts per class).

    Args:
        num_classes: K.
        **kwargs: torchmetrics ``Metric`` options (e.g. ``sync_on_compute``).
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro", **kwargs),
                "class_acc": MulticlassAccuracy(num_classes, average=None, **kwargs),
            },
            compute_groups=False,
        )

    def merge_state(self, other: ClassAccuracy) -> None:
        """Add another process's states (a MetricCollection has no merge_state of its own)."""
        for name, metric in self.items(keep_base=True, copy_state=False):
            metric.merge_state(other[name])

    def percent(self) -> tuple[float, Tensor]:
        """(overall accuracy, (K,) per-class accuracy on CPU) in percent; a class without
        samples scores 0."""
        values = self.compute()
        return 100.0 * float(values["acc"]), 100.0 * values["class_acc"].float().cpu()


def _check_pairs(correct: Tensor, groups: Tensor) -> None:
    if correct.ndim != 1 or correct.shape != groups.shape:
        raise ValueError(
            f"{tuple(correct.shape)} predictions but {tuple(groups.shape)} group ids: the "
            "partition is not of this test set"
        )
    if groups.is_floating_point() or groups.dtype == torch.bool:
        raise ValueError(f"group ids must be integers, got {groups.dtype}")
