"""Where the robust layer acts, decided once for a run, and the risks' per-target state.

A risk measure (``rdd.risk``) is a pure function of group sums and counts. This module says
where it is applied (``robust.targets``, conf/robust/default.yaml, beside ``robust.net_train_data``:
what DC/DSA's networks train on):

* ``matching``: each class's matching loss is the risk over that class's subgroups;
* ``networks``: a network that trains on real data (DC/DSA with
  ``robust.net_train_data=real`` and an inner loop, IDM's queue, MTT's experts) minimises the
  group risk of its cross-entropy instead of the mean.

``robust.targets: null`` (the default) means matching, plus networks wherever the method trains a
network on real data at this setting, so the default never asks for something that cannot
happen. An explicit target that cannot act is a one-line error.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from rdd.clustering.known import NO_SUBGROUP
from rdd.config.compose import build
from rdd.config.errors import UserError
from rdd.matching.gradient import NET_TRAIN_DATA
from rdd.parallel.strategy import DDP_NAMES
from rdd.risk.base import GroupRisk, group_masses, group_means

log = logging.getLogger(__name__)

TARGETS = ("networks", "matching")
# A window of about 1 / RUNNING_MOMENTUM network steps feeds the network-side group estimates.
RUNNING_MOMENTUM = 0.1
# Below this many samples per group in that window the network-side weights are noise.
MIN_GROUP_SAMPLES = 16


def is_robust(risk_cfg: Any) -> bool:
    """Whether the run uses a group risk at all (``risk=none`` is the base method exactly)."""
    return risk_cfg.name != "none"


@dataclass(frozen=True)
class RobustPlan:
    """Where a run's risk acts."""

    matching: bool = False
    networks: bool = False

    @property
    def active(self) -> bool:
        return self.matching or self.networks


def resolve_targets(
    risk_cfg: Any, targets: Any, trains_on_real: bool, why_not: str = ""
) -> RobustPlan:
    """The plan of a run whose method does (or does not) train networks on real data.

    Args:
        risk_cfg: the `risk` config node (``name``).
        targets: ``robust.targets``, or None for the default.
        trains_on_real: whether some network trains on real data at this setting.
        why_not: how to make networks train on real data, for the error message.

    Raises:
        UserError: unknown or empty targets, or ``networks`` where no network trains on
            real data (the risk would silently do nothing there).
    """
    if not is_robust(risk_cfg):
        return RobustPlan()
    if targets is None:
        return RobustPlan(matching=True, networks=trains_on_real)
    on = list(targets)
    unknown = [t for t in on if t not in TARGETS]
    if unknown or not on:
        raise UserError(
            f"robust.targets={on} must be a non-empty subset of {list(TARGETS)} (or null for the "
            "default): e.g. robust.targets=[matching]"
        )
    if "networks" in on and not trains_on_real:
        raise UserError(
            "robust.targets includes networks, but no network trains on real data in this run, so "
            f"the risk would do nothing there{': ' + why_not if why_not else ''}; or set "
            "robust.targets=[matching]"
        )
    return RobustPlan(matching="matching" in on, networks="networks" in on)


def build_risk(risk_cfg: Any) -> nn.Module:
    """The risk measure of a `risk` node."""
    return build(risk_cfg, "risk")


def check_robust_node(cfg: Any) -> None:
    """What the `robust` node can be checked for before any data is loaded (plan_for does
    the rest): what networks train on is set there once, and only where a network trains
    between matching steps (DC/DSA; the other methods fix it themselves)."""
    setting = cfg.robust.net_train_data
    if setting not in NET_TRAIN_DATA:
        raise UserError(
            f"unknown robust.net_train_data '{setting}': choose one of {', '.join(NET_TRAIN_DATA)}"
        )
    check_allocation_node(cfg)
    matching = cfg.matching
    if "net_train_data" not in matching:
        if setting == "real":
            raise UserError(
                f"robust.net_train_data=real applies to DC/DSA (networks trained between "
                f"matching steps); matching={matching.name} fixes what its networks train on: "
                "drop robust.net_train_data"
            )
        return
    if not OmegaConf.is_interpolation(matching, "net_train_data"):
        raise UserError(
            f"what networks train on is set in one place: use "
            f"robust.net_train_data={matching.net_train_data} instead of matching.net_train_data"
        )


def _integer(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def check_allocation_node(cfg: Any) -> None:
    """The allocation's settings (before any data is loaded)."""
    robust, node = cfg.robust, cfg.robust.allocation
    if not _integer(robust.min_per_group, 1):
        raise UserError(
            f"robust.min_per_group must be an integer >= 1, got {robust.min_per_group!r}: the "
            "real images every subgroup adds to a batch, e.g. robust.min_per_group=64"
        )
    if node.every is not None and not _integer(node.every, 1):
        raise UserError(
            f"robust.allocation.every must be an integer >= 1 (iterations between "
            f"re-allocations) or null (at the start only), got {node.every!r}"
        )
    for key, minimum in (("min_images", 0), ("train_steps", 0), ("eval_per_group", 1)):
        if not _integer(node[key], minimum):
            raise UserError(
                f"robust.allocation.{key} must be an integer >= {minimum}, got {node[key]!r}"
            )
    if not float(node.exponent) > 0:
        raise UserError(
            f"robust.allocation.exponent must be > 0 (the loss model's power law), got {node.exponent}"
        )
    if not 0 <= float(node.represent_step) <= 1:
        raise UserError(
            f"robust.allocation.represent_step must be in [0, 1] (the represented images' step "
            f"size as a share of the others'), got {node.represent_step}"
        )
    share = node.get("start_share", 1.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise UserError(
            f"robust.allocation.start_share must be in (0, 1] (the share of a group's members, "
            f"deepest first, that its images start from; 1: any member), got {share!r}"
        )
    below = node.get("rare_below", 1.0)
    if isinstance(below, bool) or not isinstance(below, int | float) or not 0 < below < 1e9:
        raise UserError(
            f"robust.allocation.rare_below must be a number of images > 0 (a group is rare "
            f"while its mass times ipc is below it; 1 by default), got {below!r}"
        )


def groups_that_own(cfg: Any) -> int:
    """Subgroups per class that own synthetic images in this run, at the fewest (0: no
    ownership). ``clustering.shape=auto`` gives two or k, decided at the first fit: the
    fewest here, the count it found checked again when the images are allocated
    (rdd.robust.ownership.allocate_class)."""
    if not is_robust(cfg.risk) or (cfg.robust.targets and "matching" not in cfg.robust.targets):
        return 0
    name = cfg.clustering.get("name")
    if name == "known":
        return 2
    if name == "faiss_kmeans" and _integer(cfg.clustering.get("k"), 1):
        k = int(cfg.clustering.k)
        return k if cfg.clustering.get("shape", "clusters") == "clusters" else min(k, 2)
    return 0  # none (refused later) or nearest_synthetic (one group per image by definition)


def check_images_per_group(cfg: Any, ipc: int) -> None:
    """Every subgroup that owns images must get ``robust.allocation.min_images`` of them."""
    groups, minimum = groups_that_own(cfg), int(cfg.robust.allocation.min_images)
    if groups and ipc < groups * minimum:
        fewer = ", lower clustering.k" if groups > 2 else ""
        raise UserError(
            f"ipc={ipc} cannot give each of the {groups} subgroups per class "
            f"robust.allocation.min_images={minimum} synthetic images: raise ipc to at "
            f"least {groups * minimum}{fewer}, or set robust.allocation.min_images=0"
        )


def check_min_per_group(cfg: Any, data: Any) -> None:
    """The stratified minimum must fit the smallest class, and with clustering=known the
    smallest known group (its size is known before any fit)."""
    if not groups_that_own(cfg):
        return
    minimum = int(cfg.robust.min_per_group)
    sizes = torch.bincount(data.train_y, minlength=data.num_classes)
    what, smallest = "class", int(sizes.min())
    if cfg.clustering.name == "known" and data.train_subgroup is not None:
        rare = torch.bincount(data.train_y[data.train_subgroup], minlength=data.num_classes)
        what, smallest = "known subgroup", int(rare.min())
    if minimum > smallest:
        raise UserError(
            f"robust.min_per_group={minimum} is larger than the smallest {what} "
            f"({smallest} training images): set robust.min_per_group={max(smallest, 1)} or lower"
        )


def check_groups_per_class(groups_per_class: int, what: str) -> None:
    """A risk over a single group per class is the mean: refuse it instead of doing nothing."""
    if groups_per_class < 2:
        raise UserError(
            f"{what} gives fewer than 2 subgroups per class, where a group risk equals the "
            "mean: set clustering.k >= 2 (faiss_kmeans) or ipc >= 2 (nearest_synthetic), or "
            "use risk=none"
        )


class RunningGroupRisk(nn.Module):
    """A group risk whose weights come from running estimates of every group's mean loss.

    A network step on a mixed batch of B real images over G = classes x k groups sees ~B / G
    samples per group (CIFAR-10, k=5: ~5), so weights from that batch alone would follow
    noise. Here the group sums and counts of the last ~1 / momentum steps (an exponential
    moving average) give the weights, computed without gradient; the gradient flows through
    this batch's group means, renormalised over the groups present in it. With the mean's
    weights (the masses) this is the batch mean, as it should be.

    Args:
        risk: a :class:`rdd.risk.GroupRisk` (its weights are used, on the running means).
        num_groups: G.
        momentum: weight of the newest batch in the running sums and counts.
    """

    def __init__(self, risk: GroupRisk, num_groups: int, momentum: float = RUNNING_MOMENTUM):
        super().__init__()
        self.risk, self.momentum = risk, float(momentum)
        self.register_buffer("sums", torch.zeros(num_groups, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(num_groups, dtype=torch.float64))

    def forward(
        self,
        group_sums: torch.Tensor,
        group_counts: torch.Tensor,
        sample_losses: torch.Tensor | None = None,
        sample_groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args: group_sums (G,) differentiable, group_counts (G,). Returns: scalar risk."""
        means = group_means(group_sums, group_counts)
        with torch.no_grad():
            first = not bool((self.counts > 0).any())
            if first:
                self.warn_if_few_samples(float(group_counts.sum()))
            keep = 0.0 if first else 1.0 - self.momentum
            self.sums.mul_(keep).add_(group_sums.detach().to(self.sums), alpha=1.0 - keep)
            self.counts.mul_(keep).add_(group_counts.detach().to(self.counts), alpha=1.0 - keep)
            running = group_means(self.sums, self.counts)
            w = self.risk._respond(running, group_masses(self.counts, running.dtype))
            w = w.to(means) * (group_counts > 0)
            w = w / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
        return (w * means).sum()

    def warn_if_few_samples(self, batch: float) -> None:
        """Say so when the window holds fewer than MIN_GROUP_SAMPLES samples per group."""
        groups = len(self.counts)
        per_group = batch / (self.momentum * groups)
        if per_group < MIN_GROUP_SAMPLES:
            log.warning(
                "the risk on networks sees ~%.0f samples per subgroup over its running window "
                "(%d real images per step, %d subgroups; at least %d are needed for stable "
                "group weights): raise the network batch (matching.batch_train) or lower "
                "clustering.k",
                per_group,
                int(batch),
                groups,
                MIN_GROUP_SAMPLES,
            )


class RiskSlots(nn.Module):
    """One copy of the run's risk per target, so that a stateful risk (group DRO's q) keeps
    a state per grouping it weighs, never one shared by unrelated uses.

    Two targets use it: ``matching`` (MTT's risk on the unrolled student's per-group real
    loss) and ``networks`` (the real-data loss of the networks trained on real images, with
    running group estimates, :class:`RunningGroupRisk`). DM/IDM/DC/DSA take no slot: their
    subgroups own images and the risk acts through the allocation (:mod:`rdd.robust.ownership`),
    which reads :attr:`template`. A class index ``c`` keeps a slot per class where a caller
    weighs one class's groups alone.

    On a refit the owner calls :meth:`reset` only where group ids change meaning
    (``Grouping.ids_persist`` false: k-means on ``features=embedding``); in a fixed feature
    space the refit is matched to the previous one, so each slot's state is carried over.
    """

    def __init__(self, risk: nn.Module) -> None:
        super().__init__()
        self.template = risk
        self.slots = nn.ModuleDict()

    def get(self, target: str, c: int | None = None, num_groups: int = 0) -> nn.Module:
        """The risk for ``target`` ("matching" or "networks") and class ``c`` (None: all)."""
        key = target if c is None else f"{target}_{c}"
        if key not in self.slots:
            self.slots[key] = self._new(target, num_groups)
        return self.slots[key]

    def _new(self, target: str, num_groups: int) -> nn.Module:
        risk = copy.deepcopy(self.template)
        if target == "networks" and isinstance(risk, GroupRisk):
            return RunningGroupRisk(risk, num_groups)
        return risk

    def reset(self) -> None:
        self.slots = nn.ModuleDict()

    def state(self) -> dict[str, dict]:
        """Every slot's state (for checkpoints); keys name the slot."""
        return {key: module.state_dict() for key, module in self.slots.items()}

    def load_state(self, state: dict[str, dict]) -> None:
        self.reset()
        for key, saved in state.items():
            target, _, c = key.partition("_")
            groups = len(saved["sums"]) if "sums" in saved else 0
            self.get(target, int(c) if c else None, groups).load_state_dict(saved)


def plan_for(cfg: Any, matcher: Any, ipc: int, class_sizes: torch.Tensor) -> RobustPlan:
    """The run's plan, after every check that would otherwise let the risk do nothing.

    Args:
        cfg: the run config (risk, clustering, trainer).
        matcher: the matching method (``trains_on_real``, ``real_training_hint``).
        ipc: images per class.
        class_sizes: (C,) training images per class.

    Raises:
        UserError: a target that cannot act, no subgroups, one subgroup per class, k larger
            than a class's pool, or two_level on networks under DDP.
    """
    plan = resolve_targets(
        cfg.risk, cfg.robust.targets, matcher.trains_on_real(ipc), matcher.real_training_hint
    )
    if not plan.active:
        return plan
    check_images_per_group(cfg, ipc)
    clustering = cfg.clustering
    if not clustering.get("_target_"):
        raise UserError(
            f"risk={cfg.risk.name} needs subgroups of the real data, but clustering=none: use "
            "clustering=faiss_kmeans (the default of a robust risk) or nearest_synthetic"
        )
    if clustering.name == "nearest_synthetic":
        check_groups_per_class(ipc, f"clustering=nearest_synthetic at ipc={ipc}")
    elif clustering.name == "known":
        if cfg.data.get("subgroup") is None:
            raise UserError(NO_SUBGROUP)
    else:
        check_groups_per_class(int(clustering.k), f"clustering.k={clustering.k}")
        check_k_fits_pool(int(clustering.k), clustering.get("pool_per_class"), class_sizes)
    distributed = cfg.trainer.get("strategy") in DDP_NAMES
    if distributed and cfg.risk.name == "two_level" and plan.networks:
        raise UserError(
            "risk=two_level on networks needs every sample's loss in one process: use "
            "robust.targets=[matching] under trainer=ddp, or run on one device"
        )
    return plan


def build_clusterer(clustering_cfg: Any, data: Any) -> nn.Module:
    """The clusterer of a `clustering` node; ``known`` gets the data's subgroup mask."""
    if clustering_cfg.name == "known":
        return build(clustering_cfg, "clustering", membership=data.train_subgroup)
    return build(clustering_cfg, "clustering")


def check_k_fits_pool(k: int, pool_per_class: int | None, class_sizes: torch.Tensor) -> None:
    """Every class's clustered pool must hold at least k images."""
    smallest = int(class_sizes.min())
    pool = smallest if pool_per_class is None else min(smallest, int(pool_per_class))
    if pool < k:
        raise UserError(
            f"clustering.k={k} is larger than the smallest class's pool of {pool} images: "
            f"lower clustering.k to at most {pool}"
        )
