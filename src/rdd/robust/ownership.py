"""Synthetic images owned by subgroups: the robust layer's matching target.

With a robust risk on matching, every synthetic image of class c belongs to exactly one
subgroup of c (``owners``: one group id per image). It starts from a real image of that group
and is matched against that group's real images only (DM/IDM: the mean embedding of the
group's owned images against its real mean; DC/DSA: the gradient on them against the group's
real gradient), so groups never pull each other's images and the clean cost of robustness
comes only from how many images each group owns. That number is the allocation that minimises
the run's risk over the groups' losses (:mod:`rdd.robust.allocation`), revisited every
``robust.allocation.every`` iterations: a network trained on the current synthetic set is
scored on stratified real images of every group (its per-group cross-entropy), the greedy
rule re-allocates, and an image moved to another group is re-initialised from that group.

``risk=none`` never builds an :class:`Ownership`: the base method runs bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rdd.clustering.base import _broadcast_from_rank0
from rdd.clustering.discovery import rare_group_of_class
from rdd.distill.expansion import expand, pack
from rdd.parallel.distributed import broadcast_from_rank0_
from rdd.robust.allocation import DEFAULT_EXPONENT, greedy_allocation


@dataclass(frozen=True)
class AllocationSettings:
    """conf/robust: ``min_per_group`` and the ``allocation`` node (rdd.config.schemas.RobustSchema)."""

    min_per_group: int = 64
    every: int | None = 500
    min_images: int = 1
    exponent: float = DEFAULT_EXPONENT
    train_steps: int = 100
    eval_per_group: int = 256

    @classmethod
    def from_config(cls, robust: Any) -> AllocationSettings:
        node = robust.get("allocation") or {}
        return cls(
            min_per_group=int(robust.get("min_per_group", cls.min_per_group)),
            every=node.get("every", cls.every),
            min_images=int(node.get("min_images", cls.min_images)),
            exponent=float(node.get("exponent", cls.exponent)),
            train_steps=int(node.get("train_steps", cls.train_steps)),
            eval_per_group=int(node.get("eval_per_group", cls.eval_per_group)),
        )

    def due(self, iteration: int) -> bool:
        """Whether to measure and re-allocate at this iteration: at 0 (after the first
        allocation) and every ``every`` iterations (``every`` None: at 0 only)."""
        return iteration == 0 or (self.every is not None and iteration % self.every == 0)


class Ownership:
    """The group of every synthetic image, grouped by class (``owners``, (C * ipc,) int64).

    Args:
        num_classes, ipc: shape of the synthetic set.
        settings: the allocation's settings.
        fixed: the groups are the synthetic images themselves (nearest_synthetic): image i of
            a class owns the class's group i and the allocation never changes.
    """

    def __init__(
        self, num_classes: int, ipc: int, settings: AllocationSettings, fixed: bool = False
    ) -> None:
        self.num_classes, self.ipc, self.settings, self.fixed = num_classes, ipc, settings, fixed
        self.owners = torch.full((num_classes * ipc,), -1, dtype=torch.int64)
        self.revisited = -1  # the last iteration whose allocation was revisited

    @property
    def allocated(self) -> bool:
        return bool((self.owners >= 0).all())

    def rows_of(self, group: int) -> torch.Tensor:
        """The synthetic rows (indices into the set) that ``group`` owns."""
        return torch.nonzero(self.owners == group).flatten()

    def counts(self, class_groups: torch.Tensor) -> torch.Tensor:
        """Images owned by each of a class's groups: (groups_per_class,)."""
        return torch.stack([(self.owners == g).sum() for g in class_groups])

    def assign(self, c: int, class_groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Give class c's rows to its groups by ``counts``; returns the rows that changed owner.

        A group keeps the rows it has (its lowest ones) up to its new count; the rows it
        gives up go, in order, to the groups that gain.
        """
        rows = torch.arange(c * self.ipc, (c + 1) * self.ipc)
        new = self.owners[rows].clone()
        freed = []
        for g, n in zip(class_groups.tolist(), counts.tolist(), strict=True):
            mine = rows[new == g]
            freed.append(mine[n:])
            new[(mine[n:] - rows[0])] = -1
        free = torch.cat(freed + [rows[new < 0]]).unique()
        for g, n in zip(class_groups.tolist(), counts.tolist(), strict=True):
            missing = n - int((new == g).sum())
            take, free = free[:missing], free[missing:]
            new[take - rows[0]] = g
        changed = rows[new != self.owners[rows]]
        self.owners[rows] = new
        return changed

    def state(self) -> dict:
        return {"owners": self.owners.clone(), "revisited": self.revisited}

    def load_state(self, state: dict) -> None:
        self.owners = state["owners"].clone()
        self.revisited = int(state["revisited"])


def initial_rows(real_x: torch.Tensor, draws: list[torch.Tensor], factor: int) -> torch.Tensor:
    """Stored images for some rows from real images (``factor**2`` index draws, one per
    tile, each (rows,)): as :func:`rdd.distill.initial.initial_images` does for the whole set."""
    return pack([real_x[d.to(real_x.device)] for d in draws], factor)


@torch.no_grad()
def group_losses(
    net: nn.Module, real_x: torch.Tensor, real_y: torch.Tensor, draws: list[torch.Tensor]
) -> torch.Tensor:
    """Mean cross-entropy of ``net`` on each group's drawn real images: (groups,)."""
    net.eval()
    losses = []
    for idx in draws:
        idx = idx.to(real_x.device)
        logits = net(real_x[idx])
        losses.append(F.cross_entropy(logits, real_y.to(real_x.device)[idx]).double().cpu())
    return torch.stack(losses)


def train_on_set(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, factor: int
) -> nn.Module:
    """``steps`` full-batch SGD steps (the evaluation protocol's lr 0.01, momentum 0.9, weight
    decay 5e-4) of ``net`` on the (expanded) synthetic set, detached."""
    x, y = expand(images.detach(), labels, factor)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    net.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def allocate_class(
    risk: nn.Module,
    sizes: torch.Tensor,
    ipc: int,
    settings: AllocationSettings,
    measured: torch.Tensor | None = None,
    anchors: torch.Tensor | None = None,
) -> torch.Tensor:
    """The images each group of a class owns, from the groups' sizes (their masses) and,
    once measured, their losses at the current counts."""
    present = sizes > 0  # a group with no real image (a k-means cluster left empty) owns none
    masses = sizes[present].double() / sizes.sum()

    def pick(t):
        return None if t is None else t[present]

    counts = torch.zeros(len(sizes), dtype=torch.int64)
    counts[present] = greedy_allocation(
        risk, masses, ipc, settings.min_images, pick(measured), pick(anchors), settings.exponent
    )
    return counts


def revisit_allocation(learner: Any) -> dict[str, float]:
    """The owners of a learner's synthetic images, made or revisited when due (at most once
    per iteration); returns what to log.

    The first call allocates by the groups' sizes alone. At iteration 0 and every ``every``
    iterations the groups' losses are measured and the images re-allocated. Every image
    restarts from a real image of its group as soon as it is allocated, so the measurement at
    iteration 0 sees the owned set the size-based allocation made (the counts its loss model
    is anchored at); an image that later changes group restarts from a real image of its new
    group (with no momentum). Under DDP rank 0's owners and images are
    broadcast, so the ranks never disagree on a training network's last bits.
    """
    own = learner.ownership
    if own.revisited == learner.iteration:
        return {}
    own.revisited = learner.iteration
    first, due = not own.allocated, not own.fixed and own.settings.due(learner.iteration)
    if not (first or due):
        return {}
    allocations = [first_allocation] if first else []
    if due:
        allocations.append(measured_allocation)
    moved = [torch.empty(0, dtype=torch.int64)]
    for allocate in allocations:
        moved.append(allocate(learner))
        if len(moved[-1]):
            restart_rows(learner, moved[-1])
    return allocation_stats(learner, len(torch.cat(moved).unique()))


def class_groups_and_sizes(learner: Any, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    return learner.pool.class_groups(c), learner.pool.group_sizes(c)


def first_allocation(learner: Any) -> torch.Tensor:
    """Owners from the groups' sizes alone (nothing measured yet); returns every row."""
    own = learner.ownership
    if own.fixed:  # nearest_synthetic: image i of class c is the centre of group c * ipc + i
        own.owners = torch.arange(own.num_classes * own.ipc)
        return torch.empty(0, dtype=torch.int64)
    risk = learner.risks.template
    for c in range(own.num_classes):
        groups, sizes = class_groups_and_sizes(learner, c)
        own.assign(c, groups, allocate_class(risk, sizes, own.ipc, own.settings))
    return torch.arange(own.num_classes * own.ipc)


def measured_allocation(learner: Any) -> torch.Tensor:
    """Measure every group's loss with a network trained on the current set, re-allocate;
    returns the rows that changed owner."""
    own, pool = learner.ownership, learner.pool
    net = train_on_set(
        learner.new_net(),
        learner.images,
        learner.labels,
        own.settings.train_steps,
        learner.matcher.factor,
    )
    changed = []
    for c in range(own.num_classes):
        groups, sizes = class_groups_and_sizes(learner, c)
        draws = [pool.draw_group(g, own.settings.eval_per_group, learner.generator) for g in groups]
        measured = group_losses(net, learner.real_x, learner.real_y, draws)
        anchors = own.counts(groups)
        counts = allocate_class(
            learner.risks.template, sizes, own.ipc, own.settings, measured, anchors
        )
        changed.append(own.assign(c, groups, counts))
    return torch.cat(changed)


def restart_rows(learner: Any, rows: torch.Tensor) -> None:
    """Start ``rows`` of the synthetic set afresh from real images of their owners' groups
    (``factor**2`` draws for IDM's packed images; noise for ``init=noise``), with no
    momentum in the image optimizer; then rank 0's owners and images for every rank."""
    own, pool, generator = learner.ownership, learner.pool, learner.generator
    factor = learner.matcher.factor
    draws = [group_draw(pool, own.owners[rows], generator) for _ in range(factor * factor)]
    with torch.no_grad():
        if learner.matcher.init == "noise":
            fresh = torch.randn(learner.images[rows].shape, generator=generator)
        else:
            fresh = initial_rows(learner.real_x, draws, factor)
        learner.images[rows.to(learner.images.device)] = fresh.to(learner.images)
        for opt in learner.optimizer_list() if learner._trainer is not None else []:
            buffer = opt.state.get(learner.images, {}).get("momentum_buffer")
            if buffer is not None:
                buffer[rows.to(buffer.device)] = 0
    broadcast_ownership(learner)


def group_draw(pool: Any, owners: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One real image index per row, from the row's group, distinct within a group as long
    as the group has enough images: (rows,)."""
    idx = torch.empty(len(owners), dtype=torch.int64)
    for group in owners.unique().tolist():
        where = owners == group
        picks = pool.draw_group(group, int(where.sum()), generator)
        idx[where] = picks[torch.arange(int(where.sum())) % len(picks)]
    return idx


def broadcast_ownership(learner: Any) -> None:
    (owners,) = _broadcast_from_rank0(learner.ownership.owners)
    learner.ownership.owners = owners
    broadcast_from_rank0_(learner.images)


def allocation_stats(learner: Any, moved: int) -> dict[str, float]:
    """Images moved, and with a known subgroup the images its best-matching group owns."""
    stats = {"alloc/moved": float(moved)}
    own, pool = learner.ownership, learner.pool
    if pool.altered is None:
        return stats
    owned = []
    for c in range(own.num_classes):
        groups = pool.class_groups(c)
        in_class = pool.labels == c
        local = pool.groups[in_class] - int(groups[0])
        rare_group = rare_group_of_class(local, pool.altered[in_class], len(groups))
        owned.append(float((own.owners == int(groups[rare_group])).sum()))
    return stats | {"alloc/rare_images": sum(owned) / len(owned)}
