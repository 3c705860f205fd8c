"""What the matchers share for the robust layer: real statistics, group sums, group risks.

* ``matching``: subgroups own synthetic images (:mod:`rdd.robust.ownership`); the matchers compare
  each group's owned images with that group's real images, using the real gradients and
  embeddings here (each all-reduced under DDP).
* ``networks``: a network trained on real data minimises the group risk of its per-sample
  cross-entropy instead of the mean (:func:`real_data_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rdd.parallel.distributed import (
    all_reduce_sum,
    all_reduce_sum_coalesced,
    data_world,
    global_sums,
    shard,
)
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


def real_embedding_stats(net: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding (D,) of a real batch every rank holds in full, and the noise of that
    mean, tr(Sigma) / n with Sigma the batch's sample covariance (no gradient)."""
    emb = embed_shard(net, real)
    count = torch.full((), float(len(emb)), device=real.device)
    total, squares, count = all_reduce_sum_coalesced([emb.sum(0), (emb**2).sum(), count])
    mean = total / count
    trace = (squares - count * (mean**2).sum()) / (count - 1).clamp_min(1)
    return mean, trace / count


def debiased_sq_distance(
    mean: torch.Tensor, noise: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """||mean - target||^2 - noise: with ``mean`` the average of n samples and ``noise`` =
    tr(Sigma_hat) / n (:func:`real_embedding_stats`), an unbiased estimate of the squared
    distance of the true mean to ``target``; the raw distance of a small group's mean is
    inflated by tr(Sigma) / n, which would make it look worse than it is."""
    return ((mean - target) ** 2).sum() - noise


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
    and, with per-subgroup losses (of the groups' owned images), their min, mean and max."""
    if not group_losses:
        return {"match_loss": float(match_loss)}
    every = torch.cat(group_losses)
    values = torch.stack([match_loss, every.min(), every.mean(), every.max()]).tolist()
    keys = ("match_loss", "risk/group_loss_min", "risk/group_loss_mean", "risk/group_loss_max")
    return dict(zip(keys, values, strict=True))
