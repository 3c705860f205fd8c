"""The real training data a learner draws from, and the subgroups its images belong to.

*Fitting is not sampling.* Every real batch is drawn exactly as the base method draws it:
fresh, from every image of its class, with the run's generator. The subgroups come from a
clustering fitted now and then (``clustering.every``) on a pool of at most
``clustering.pool_per_class`` images per class; right after a fit *every* training image is
assigned to its nearest centroid in the clustering's feature space (or to its nearest
synthetic image for ``nearest_synthetic``), so a batch's groups are a table look-up. A robust
run thus sees as much real data as the base run, and a risk is compared with the mean on the
same batches (``risk=none`` draws the same random numbers, so it stays bit for bit the base
method). The assignment costs one feature pass over the training set per fit.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from rdd.clustering.base import _broadcast_from_rank0
from rdd.clustering.discovery import rare_group_discovery

log = logging.getLogger(__name__)


class ClassIndex:
    """Indices of each class's samples, for drawing per-class real batches."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.members = [(labels == c).nonzero().flatten() for c in range(num_classes)]

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to n distinct random indices of class c (all of them if the class is smaller)."""
        members = self.members[c]
        return members[torch.randperm(len(members), generator=generator)[:n]]


class RealPool:
    """Per-class draws of real images and the current group of every image.

    Args:
        labels: (N,) classes of the real training images.
        num_classes: C.

    Attributes:
        groups: (N,) int64 group of every image on the CPU; before a fit, its class.
        margins: (N,) float32, how deep inside its group every image lies (k-means:
            rdd.clustering.kmeans_clusterer.group_margins); None for groups without centroids.
        num_groups: G (C before a fit; C * k for k-means, C * ipc for nearest_synthetic).
        groups_per_class: G / C.
    """

    def __init__(
        self, labels: torch.Tensor, num_classes: int, altered: torch.Tensor | None = None
    ) -> None:
        self.labels = labels.cpu()
        self.num_classes = num_classes
        self.index = ClassIndex(self.labels, num_classes)
        # The known rare subgroup (data.subgroup), only to measure how well a fit finds it.
        self.altered = None if altered is None else altered.cpu().bool()
        self.set_groups(self.labels.clone(), 1)

    @property
    def num_groups(self) -> int:
        return self.num_classes * self.groups_per_class

    def draw(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to n distinct random indices of class c: (n,)."""
        return self.index.sample(c, n, generator)

    def draw_mixed(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n random indices of any class (with replacement across draws): (n,)."""
        return torch.randint(len(self.labels), (n,), generator=generator)

    def class_groups(self, c: int) -> torch.Tensor:
        """The ids of class c's groups: (groups_per_class,)."""
        k = self.groups_per_class
        return torch.arange(c * k, (c + 1) * k)

    def set_groups(
        self, groups: torch.Tensor, groups_per_class: int, margins: torch.Tensor | None = None
    ) -> None:
        self.margins = None if margins is None else margins.cpu().float()
        self.groups = groups.cpu()
        self.groups_per_class = int(groups_per_class)
        order = torch.argsort(self.groups, stable=True)
        sizes = torch.bincount(self.groups, minlength=self.num_groups)
        self.members = list(order.split(sizes.tolist()))  # indices of every group's images

    def group_sizes(self, c: int) -> torch.Tensor:
        """Images of each of class c's groups: (groups_per_class,)."""
        return torch.tensor([len(self.members[g]) for g in self.class_groups(c).tolist()])

    def draw_group(self, group: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to n distinct random indices of one group (all of it if it is smaller)."""
        members = self.members[group]
        return members[torch.randperm(len(members), generator=generator)[:n]]

    def draw_start(
        self, group: int, n: int, share: float, generator: torch.Generator
    ) -> torch.Tensor:
        """Up to n distinct indices of ``group`` for synthetic images to start from: drawn at
        random from the ``share`` of its members that lie deepest inside it (by margin; at
        least n of them), so a start is a typical member rather than one on the boundary with
        another group. At ``share`` 1, or without margins, exactly :meth:`draw_group`."""
        if share >= 1 or self.margins is None:
            return self.draw_group(group, n, generator)
        members = self.members[group]
        keep = max(n, math.ceil(share * len(members)))
        deepest = members[self.margins[members].argsort(descending=True, stable=True)[:keep]]
        return deepest[torch.randperm(len(deepest), generator=generator)[:n]]

    def stratified_sizes(self, c: int, n: int, minimum: int) -> list[int]:
        """Images to draw from each group of class c for a batch of about n: the group's share
        of n, at least ``minimum``, at most the group."""
        sizes = self.group_sizes(c)
        share = sizes.double() / sizes.sum().clamp_min(1)
        wanted = torch.clamp((share * n).round().long(), min=minimum)
        return torch.minimum(wanted, sizes).tolist()

    def draw_stratified(
        self, c: int, n: int, minimum: int, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Class c's real batch drawn group by group (:meth:`stratified_sizes`): one index
        tensor per group of the class, in the order of :meth:`class_groups`."""
        sizes = self.stratified_sizes(c, n, minimum)
        groups = self.class_groups(c).tolist()
        return [self.draw_group(g, m, generator) for g, m in zip(groups, sizes, strict=True)]

    def warn_small_groups(self, minimum: int) -> None:
        """Say which groups hold fewer images than the stratified minimum (all are drawn)."""
        sizes = torch.tensor([len(m) for m in self.members])
        small = int((sizes < minimum).sum())
        if small and self.groups_per_class > 1:
            log.warning(
                "%d of %d subgroups hold fewer than robust.min_per_group=%d real images (the "
                "smallest: %d); their statistics use every image they have and are noisier",
                small,
                len(sizes),
                minimum,
                int(sizes.min()),
            )

    def refit(
        self,
        clusterer: nn.Module,
        images: torch.Tensor,
        net: nn.Module,
        iteration: int,
        synthetic: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Fit the clustering on its pool, then assign every image; returns size statistics.

        Args:
            clusterer: a clusterer of :mod:`rdd.clustering`.
            images: (N, C, H, W) all real training images (on the learner's device).
            net: the network whose features the clustering uses (``features=embedding``).
            iteration: the outer iteration (seeds the pool draw).
            synthetic: the synthetic images and labels (``nearest_synthetic`` centres);
                None where there is no synthetic set (experts).
        """
        # The pool depends on the clusterer's seed and the iteration only (same on every rank).
        pool = clusterer.pool(self.labels, self.num_classes, iteration)
        labels = self.labels.to(images.device)
        pool_dev = pool.to(images.device)
        syn_args = () if synthetic is None else synthetic
        clusterer.fit(images[pool_dev], labels[pool_dev], self.num_classes, net, *syn_args)
        groups, margins = clusterer.assign_with_margins(images, labels, net, self.num_classes)
        # Rank 0's table for everyone: the ranks' features may differ in the last bits.
        if margins is None:
            (groups,) = _broadcast_from_rank0(groups.cpu())
        else:
            groups, margins = _broadcast_from_rank0(groups.cpu(), margins)
        ipc = None if synthetic is None else len(synthetic[1]) // self.num_classes
        per_class = clusterer.num_groups(self.num_classes, ipc) // self.num_classes
        self.set_groups(groups, per_class, margins)
        sizes = torch.bincount(self.groups, minlength=self.num_groups).float()
        stats = {"cluster/size_min": float(sizes.min()), "cluster/size_max": float(sizes.max())}
        return stats | clusterer.fit_stats() | self.discovery()

    def discovery(self) -> dict[str, float]:
        """How well the groups find the known rare subgroup (empty without data.subgroup)."""
        if self.altered is None or self.groups_per_class < 2:
            return {}
        return rare_group_discovery(
            self.groups, self.labels, self.altered, self.groups_per_class, self.num_classes
        )

    def state(self) -> dict:
        state = {"groups": self.groups.clone(), "groups_per_class": self.groups_per_class}
        if self.margins is not None:
            state["margins"] = self.margins.clone()
        return state

    def load_state(self, state: dict) -> None:
        # checkpoints from before robust.allocation.start_share hold no margins
        self.set_groups(state["groups"], int(state["groups_per_class"]), state.get("margins"))
