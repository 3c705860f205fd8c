"""The robust layer inside gradient matching (DC/DSA).

Two places where a group risk replaces the mean (``robust.targets``):

* ``matching``: each class's real batch is split by subgroup; the distance between the
  synthetic gradient and each subgroup's real gradient is one group loss, and the risk turns the
  group losses of a class (with their sample counts) into that class's matching loss.
* ``networks``: the sampled network trains on real data between matching steps, minimising the
  group risk of its per-sample cross-entropy instead of the mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rdd.distributed import (
    all_reduce_sum,
    all_reduce_sum_coalesced,
    data_world,
    global_sums,
    shard,
)
from rdd.matching.base import DistillContext
from rdd.risk.mean import MeanRisk


def group_sums(
    values: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group sums and counts of per-sample values.

    Args:
        values: (N,) per-sample values (differentiable).
        groups: (N,) int64 group ids in [0, num_groups).

    Returns:
        sums (num_groups,) and counts (num_groups,) float, zero for empty groups.
    """
    sums = values.new_zeros(num_groups).index_add(0, groups, values)
    counts = values.new_zeros(num_groups).index_add(0, groups, torch.ones_like(values))
    return sums, counts


def real_gradient(
    net: nn.Module, params: list[torch.Tensor], real: torch.Tensor, c: int
) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy of a real batch (n, C, H, W) of class c, detached.

    Every rank holds the same batch and computes the gradient of the *summed* loss on its
    shard; sums and the count are all-reduced, then divided, so N ranks give the
    single-process gradient.
    """
    local = shard(real)
    if len(local):
        target = torch.full((len(local),), c, dtype=torch.long, device=real.device)
        grads = torch.autograd.grad(F.cross_entropy(net(local), target, reduction="sum"), params)
    else:
        grads = [torch.zeros_like(p) for p in params]
    count = torch.full((), float(len(local)), device=real.device)
    *sums, total = all_reduce_sum_coalesced([*(g.detach() for g in grads), count])
    return [s / total for s in sums]


def subgroup_distances(
    net: nn.Module,
    params: list[torch.Tensor],
    real: torch.Tensor,
    real_groups: torch.Tensor,
    class_groups: torch.Tensor,
    g_syn: list[torch.Tensor],
    c: int,
    distance: Callable,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance of the synthetic gradient to each subgroup's real gradient, for class c.

    Args:
        real: (n, C, H, W) real images of class c (the same on every rank);
            real_groups: (n,) their subgroup ids.
        class_groups: (S,) the ids of class c's subgroups, in a fixed order, so that a
            stateful risk (group DRO) sees group s in slot s at every step.
        g_syn: the synthetic batch's loss gradient (with its graph, so distances are
            differentiable w.r.t. the synthetic images).

    Returns:
        distance x count (S,) and counts (S,), as group "sums" and counts for a risk
        measure; a subgroup absent from the batch has count 0 (and weight 0).
    """
    distances, counts = [], []
    for group in class_groups:
        members = real[real_groups == group]
        if len(members):
            distances.append(distance(g_syn, real_gradient(net, params, members, c)))
        else:
            distances.append(g_syn[0].new_zeros(()))
        counts.append(float(len(members)))
    counts_t = torch.tensor(counts, dtype=real.dtype, device=real.device)
    return torch.stack(distances) * counts_t, counts_t


def risk_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    risk: nn.Module,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The group risk of the per-sample cross-entropy: (risk value, group sums, group counts).

    Under torch.distributed the inputs are this rank's shard: sums and counts are all-reduced
    first, so the value is the global risk and the gradient this rank's share of it.
    """
    losses = F.cross_entropy(logits, labels, reduction="none")
    sums, counts = group_sums(losses, groups, num_groups)
    sums, counts = global_sums(sums), all_reduce_sum(counts)
    samples = (
        (losses, groups) if data_world() == 1 else (None, None)
    )  # per-sample risks: one process
    return risk(sums, counts, *samples), sums.detach(), counts


@torch.no_grad()
def embed_shard(net: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Embeddings (n_local, D) of this rank's shard of ``real``, no gradient.

    An empty shard (more ranks than images) still gets the embedding's width D.
    """
    local = shard(real)
    return net.embed(local) if len(local) else net.embed(real[:1])[:0]


def real_mean_embedding(net: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Mean embedding (D,) of a real batch that every rank holds in full (no gradient).

    Each rank embeds its shard; the embedding sum and the count are all-reduced.
    """
    emb = embed_shard(net, real)
    count = torch.full((), float(len(emb)), device=real.device)
    total, count = all_reduce_sum_coalesced([emb.sum(0), count])
    return total / count


def subgroup_embedding_distances(
    net: nn.Module,
    real: torch.Tensor,
    real_groups: torch.Tensor,
    class_groups: torch.Tensor,
    mean_syn: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance between ``mean_syn`` and each subgroup's mean real embedding.

    Args:
        real: (n, C, H, W) real images of one class (the same on every rank);
            real_groups: (n,) their subgroup ids.
        class_groups: (S,) the sorted ids of the class's subgroups (fixed slots, see
            :func:`subgroup_distances`).
        mean_syn: (D,) mean synthetic embedding (with its graph).

    Returns:
        distance x count (S,) and counts (S,); absent subgroups have count 0.
    """
    emb = embed_shard(net, real)
    slot = torch.searchsorted(class_groups, shard(real_groups))
    sums = emb.new_zeros(len(class_groups), emb.shape[1]).index_add(0, slot, emb)
    counts = emb.new_zeros(len(class_groups)).index_add(
        0, slot, torch.ones_like(slot, dtype=emb.dtype)
    )
    sums, counts = all_reduce_sum_coalesced([sums, counts])
    means = sums / counts.clamp_min(1)[:, None]
    distances = ((means - mean_syn) ** 2).sum(1)
    return distances * counts, counts


def real_data_loss(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    risk: nn.Module | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of a network on a real batch every rank holds in full: (loss, this rank's logits,
    their labels).

    ``risk=None`` is the mean cross-entropy; otherwise the group risk over all ranks' sums
    and counts. Each rank works on its shard; its gradients are summed over ranks by the caller
    (``sgd_step(..., net)``).
    """
    if risk is None and data_world() == 1:
        logits = net(x)
        return F.cross_entropy(logits, y), logits, y
    x, y, groups = shard(x), shard(y), shard(groups)
    logits = net(x)
    loss, _, _ = risk_cross_entropy(logits, y, groups, num_groups, risk or MeanRisk())
    return loss, logits, y


def global_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Right predictions among this rank's logits, summed over ranks."""
    return all_reduce_sum((logits.detach().argmax(1) == labels).sum().to(logits.dtype))


def logged_losses(match_loss: torch.Tensor, group_losses: list[torch.Tensor]) -> dict[str, float]:
    """The iteration's logged losses, read from the device in one transfer: ``match_loss``
    and, with per-subgroup losses, their min, mean and max (the risk's value is the loss)."""
    if not group_losses:
        return {"match_loss": float(match_loss)}
    every = torch.cat(group_losses)
    values = torch.stack([match_loss, every.min(), every.mean(), every.max()]).tolist()
    keys = ("match_loss", "risk/group_loss_min", "risk/group_loss_mean", "risk/group_loss_max")
    return dict(zip(keys, values, strict=True)) | {"risk/value": values[0]}


def class_risk(
    ctx: DistillContext, c: int, sums: torch.Tensor, counts: torch.Tensor, log: list[torch.Tensor]
) -> torch.Tensor:
    """Class c's matching loss: the risk over its subgroups (``sums``/``counts``: (S,)).

    Each present subgroup's loss is appended to ``log``. Per-sample risks (two_level) get
    one "sample" per subgroup: its mean loss.
    """
    present = counts > 0
    per_group = sums[present] / counts[present]
    log.append(per_group.detach())
    slots = torch.arange(len(counts), device=counts.device)[present]
    return ctx.risk_for("matching", c)(sums, counts, per_group, slots)
