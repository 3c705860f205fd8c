"""Synthetic images owned by subgroups: the robust layer's matching target.

With a robust risk on matching, every synthetic image of class c is either owned by exactly
one subgroup of c or shared (``owners``: a group id per image, or :data:`SHARED`). An owned
image starts from a real image of its group and is matched against that group's real images
only (DM/IDM: the mean embedding of the group's owned images against its real mean; DC/DSA:
the gradient on them against the group's real gradient); the shared images of a class are
matched against a plain batch of the whole class, as the base method matches every image
(``robust.allocation.shared``, default on; off: every image is owned). So groups never pull
each other's images and the clean cost of robustness comes only from how many images the
groups own. That number is the allocation that minimises the run's risk over the groups'
losses (:mod:`rdd.robust.allocation`), revisited every ``robust.allocation.every``
iterations: a network trained on the current synthetic set is scored on stratified real
images of every group (its per-group cross-entropy), the allocation is made again, and an
image given to another group restarts from a real image of that group (an image given back
to the shared pool keeps its pixels: it is an image of the class already).

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
from rdd.config.errors import UserError
from rdd.distill.expansion import expand, pack
from rdd.parallel.distributed import broadcast_from_rank0_
from rdd.robust.allocation import (
    DEFAULT_EXPONENT,
    effective_counts,
    greedy_allocation,
    shared_allocation,
)

SHARED = -2  # the owner of a shared image: matched against the whole class
UNALLOCATED = -1


@dataclass(frozen=True)
class AllocationSettings:
    """conf/robust: ``min_per_group`` and the ``allocation`` node (rdd.config.schemas.RobustSchema)."""

    min_per_group: int = 64
    every: int | None = 500
    shared: bool = True
    min_images: int = 0
    represent: bool = True
    represent_step: float = 1.0
    start_share: float = 1.0
    rare_below: float = 1.0
    exponent: float = DEFAULT_EXPONENT
    train_steps: int = 100
    eval_per_group: int = 256

    @classmethod
    def from_config(cls, robust: Any) -> AllocationSettings:
        node = robust.get("allocation") or {}
        return cls(
            min_per_group=int(robust.get("min_per_group", cls.min_per_group)),
            every=node.get("every", cls.every),
            shared=bool(node.get("shared", cls.shared)),
            min_images=int(node.get("min_images", cls.min_images)),
            represent=bool(node.get("represent", cls.represent)),
            represent_step=float(node.get("represent_step", cls.represent_step)),
            start_share=float(node.get("start_share", cls.start_share)),
            rare_below=float(node.get("rare_below", cls.rare_below)),
            exponent=float(node.get("exponent", cls.exponent)),
            train_steps=int(node.get("train_steps", cls.train_steps)),
            eval_per_group=int(node.get("eval_per_group", cls.eval_per_group)),
        )

    def due(self, iteration: int) -> bool:
        """Whether to measure and re-allocate at this iteration: at 0 (after the first
        allocation) and every ``every`` iterations (``every`` None: at 0 only)."""
        return iteration == 0 or (self.every is not None and iteration % self.every == 0)


class Ownership:
    """The owner of every synthetic image, grouped by class (``owners``, (C * ipc,) int64):
    a group id, or :data:`SHARED`.

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
        self.owners = torch.full((num_classes * ipc,), UNALLOCATED, dtype=torch.int64)
        self.revisited = -1  # the last iteration whose allocation was revisited
        # The shared rows that kept a rare group's real start (``represent``), whose steps
        # are scaled by ``represent_step``.
        self.represented = torch.zeros(num_classes * ipc, dtype=torch.bool)

    @property
    def allocated(self) -> bool:
        return bool((self.owners != UNALLOCATED).all())

    def class_rows(self, c: int) -> torch.Tensor:
        return torch.arange(c * self.ipc, (c + 1) * self.ipc)

    def rows_of(self, group: int) -> torch.Tensor:
        """The synthetic rows (indices into the set) that ``group`` owns."""
        return torch.nonzero(self.owners == group).flatten()

    def shared_rows(self, c: int) -> torch.Tensor:
        """Class c's shared rows."""
        rows = self.class_rows(c)
        return rows[self.owners[rows] == SHARED]

    def counts(self, class_groups: torch.Tensor) -> torch.Tensor:
        """Images owned by each of a class's groups: (groups_per_class,)."""
        return torch.stack([(self.owners == g).sum() for g in class_groups])

    def slots(self, c: int, class_groups: torch.Tensor) -> torch.Tensor:
        """Class c's owned counts per group, then its shared count: (groups_per_class + 1,)."""
        shared = torch.tensor([len(self.shared_rows(c))])
        return torch.cat([self.counts(class_groups), shared])

    def assign(self, c: int, owners: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Give class c's rows to ``owners`` (group ids, :data:`SHARED` too) by ``counts``;
        returns the rows that changed owner.

        An owner keeps the rows it has (its lowest ones) up to its new count; the rows it
        gives up go, in order, to the owners that gain.
        """
        rows = self.class_rows(c)
        new = self.owners[rows].clone()
        freed = []
        for g, n in zip(owners.tolist(), counts.tolist(), strict=True):
            mine = rows[new == g]
            freed.append(mine[n:])
            new[(mine[n:] - rows[0])] = UNALLOCATED
        free = torch.cat(freed + [rows[new == UNALLOCATED]]).unique()
        for g, n in zip(owners.tolist(), counts.tolist(), strict=True):
            missing = n - int((new == g).sum())
            take, free = free[:missing], free[missing:]
            new[take - rows[0]] = g
        changed = rows[new != self.owners[rows]]
        self.owners[rows] = new
        return changed

    def step_scale(self) -> torch.Tensor | None:
        """(C * ipc,) the share of the image step each row takes, or None where every row
        takes the whole step."""
        if self.settings.represent_step == 1 or not bool(self.represented.any()):
            return None
        scale = torch.ones(len(self.owners))
        scale[self.represented] = self.settings.represent_step
        return scale

    def state(self) -> dict:
        return {
            "owners": self.owners.clone(),
            "revisited": self.revisited,
            "represented": self.represented.clone(),
        }

    def load_state(self, state: dict) -> None:
        self.owners = state["owners"].clone()
        self.revisited = int(state["revisited"])
        # checkpoints from before represent_step hold no such rows
        self.represented = state.get("represented", torch.zeros_like(self.owners, dtype=torch.bool))


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
    once measured, their losses at the current counts (``anchors``: effective counts with
    shared images); with shared images the shared count follows: (G,) or (G + 1,)."""
    present = torch.nonzero(sizes > 0).flatten()  # an empty k-means cluster owns nothing
    if len(present) * settings.min_images > ipc:  # clustering.shape=auto kept k clusters
        raise UserError(
            f"ipc={ipc} cannot give each of the {len(present)} subgroups the clustering found "
            f"in a class robust.allocation.min_images={settings.min_images} synthetic images: "
            f"raise ipc to at least {len(present) * settings.min_images}, set "
            "clustering.shape=rare_vs_rest, or set robust.allocation.min_images=0"
        )
    masses = sizes[present].double() / sizes.sum()

    def pick(t):
        return None if t is None else t[present]

    args = (risk, masses, ipc, settings.min_images, pick(measured), pick(anchors))
    if settings.shared:
        picked = shared_allocation(*args, settings.exponent, settings.rare_below)
    else:
        picked = greedy_allocation(*args, settings.exponent)
    counts = torch.zeros(len(sizes) + int(settings.shared), dtype=torch.int64)
    counts[present] = picked[: len(present)]
    if settings.shared:
        counts[-1] = picked[-1]
    return counts


def owner_ids(class_groups: torch.Tensor, settings: AllocationSettings) -> torch.Tensor:
    """The owners :func:`allocate_class`'s counts are for: the groups, then SHARED if on."""
    if not settings.shared:
        return class_groups
    return torch.cat([class_groups.cpu(), torch.tensor([SHARED])])


def revisit_allocation(learner: Any) -> dict[str, float]:
    """The owners of a learner's synthetic images, made or revisited when due (at most once
    per iteration); returns what to log.

    The first call allocates by the groups' sizes alone. At iteration 0 and every ``every``
    iterations the groups' losses are measured and the images re-allocated. Every image
    restarts from a real image of its group as soon as it is allocated, so the measurement at
    iteration 0 sees the owned set the size-based allocation made (the counts its loss model
    is anchored at); an image that later changes group restarts from a real image of its new
    group (with no momentum). That first owned set is a probe: an image the measurement
    gives back to the shared pool at once keeps its group's real start (``represent``, the
    default), so the shared pool starts with that group in it; without ``represent`` it takes
    back the base method's start, so a run whose groups end up owning nothing is the base
    method. The kept rows are ``own.represented`` (their steps scaled by ``represent_step``)
    while they stay shared. Under DDP rank 0's owners and images are broadcast, so the ranks
    never disagree on a training network's last bits.
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
    take_back = first and not own.settings.represent  # the probe's images: the base start
    base_start = learner.images.detach().clone() if take_back else None
    moved = [torch.empty(0, dtype=torch.int64)]
    probe = torch.zeros_like(own.represented)
    for allocate in allocations:
        moved.append(allocate(learner))
        owned = moved[-1][own.owners[moved[-1]] != SHARED]  # a shared image keeps its pixels
        if len(owned):
            restart_rows(learner, owned)
        if allocate is first_allocation and own.settings.represent and not own.fixed:
            probe = own.owners >= 0  # rows that restarted from their group's real images
    # represented: a probe row given back to the shared pool (a row a group takes is owned)
    own.represented = (own.represented | probe) & (own.owners == SHARED)
    if base_start is not None:  # shared after the first revisit: the base method's start
        with torch.no_grad():
            shared = (own.owners == SHARED).to(learner.images.device)
            learner.images[shared] = base_start[shared]
    return allocation_stats(learner, len(torch.cat(moved).unique()))


def class_groups_and_sizes(learner: Any, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    return learner.pool.class_groups(c), learner.pool.group_sizes(c)


def first_allocation(learner: Any) -> torch.Tensor:
    """Owners from the groups' sizes alone (nothing measured yet); returns every row."""
    own = learner.ownership
    if own.fixed:  # nearest_synthetic: image i of class c is the centre of group c * ipc + i
        own.owners = torch.arange(own.num_classes * own.ipc)
        return torch.empty(0, dtype=torch.int64)
    risk, settings = learner.risks.template, own.settings
    for c in range(own.num_classes):
        groups, sizes = class_groups_and_sizes(learner, c)
        own.assign(c, owner_ids(groups, settings), allocate_class(risk, sizes, own.ipc, settings))
    return torch.arange(own.num_classes * own.ipc)


def measured_allocation(learner: Any) -> torch.Tensor:
    """Measure every group's loss with a network trained on the current set, re-allocate;
    returns the rows that changed owner."""
    own, pool, generator = learner.ownership, learner.pool, learner.robust_generator
    net = train_on_set(
        learner.new_net(generator),
        learner.images,
        learner.labels,
        own.settings.train_steps,
        learner.matcher.factor,
    )
    changed = []
    for c in range(own.num_classes):
        groups, sizes = class_groups_and_sizes(learner, c)
        draws = [pool.draw_group(g, own.settings.eval_per_group, generator) for g in groups]
        measured = group_losses(net, learner.real_x, learner.real_y, draws)
        counts = allocate_class(
            learner.risks.template,
            sizes,
            own.ipc,
            own.settings,
            measured,
            anchors_of(own, c, groups, sizes),
        )
        changed.append(own.assign(c, owner_ids(groups, own.settings), counts))
    return torch.cat(changed)


def anchors_of(own: Ownership, c: int, groups: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """The image counts class c's groups were measured at: owned, plus (with shared images)
    each group's share of the shared ones, by its mass among the class's real images."""
    if not own.settings.shared:
        return own.counts(groups)
    return effective_counts(own.slots(c, groups), sizes.double() / sizes.sum())


def restart_rows(learner: Any, rows: torch.Tensor) -> None:
    """Start ``rows`` of the synthetic set afresh from real images of their owners' groups
    (``factor**2`` draws for IDM's packed images, from each group's deepest ``start_share``
    of members; noise for ``init=noise``), with no momentum in the image optimizer; then rank
    0's owners and images for every rank."""
    own, pool, generator = learner.ownership, learner.pool, learner.robust_generator
    factor, share = learner.matcher.factor, own.settings.start_share
    draws = [group_draw(pool, own.owners[rows], generator, share) for _ in range(factor * factor)]
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


def group_draw(
    pool: Any, owners: torch.Tensor, generator: torch.Generator, share: float = 1.0
) -> torch.Tensor:
    """One real image index per row, from the row's group (its deepest ``share`` of members,
    :meth:`RealPool.draw_start`), distinct within a group as long as the group has enough
    images: (rows,)."""
    idx = torch.empty(len(owners), dtype=torch.int64)
    for group in owners.unique().tolist():
        where = owners == group
        picks = pool.draw_start(group, int(where.sum()), share, generator)
        idx[where] = picks[torch.arange(int(where.sum())) % len(picks)]
    return idx


def broadcast_ownership(learner: Any) -> None:
    (owners,) = _broadcast_from_rank0(learner.ownership.owners)
    learner.ownership.owners = owners
    broadcast_from_rank0_(learner.images)


def allocation_stats(learner: Any, moved: int) -> dict[str, float]:
    """Images moved, shared images per class (with shared images on), and with a known
    subgroup the images its best-matching group owns."""
    stats = {"alloc/moved": float(moved)}
    own, pool = learner.ownership, learner.pool
    if own.settings.shared:
        stats["alloc/shared_images"] = float((own.owners == SHARED).sum()) / own.num_classes
        stats["alloc/represented_images"] = float(own.represented.sum()) / own.num_classes
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
