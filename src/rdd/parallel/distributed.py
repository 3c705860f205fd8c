"""torch.distributed helpers that are no-ops in a single process.

Distillation keeps every rank's random stream identical (same seed, CPU generators), so every
rank draws the same global real batch; each rank then works on its shard, and sums and counts
are all-reduced before anything is divided or weighted (never averages of per-rank means).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


# Class-parallel DDP (trainer.class_parallel): each rank owns the classes c with
# c % world == rank and computes their losses on whole real batches, so the real data is not
# split; the functions below that split or reduce real batches then act locally. Set in each
# rank by the learner (rdd.distill.learner), never in the launching process.
_class_parallel = False


def set_class_parallel(on: bool) -> None:
    global _class_parallel
    _class_parallel = bool(on)


def class_parallel() -> bool:
    return _class_parallel and world_size() > 1


def owns_class(c: int) -> bool:
    """Whether this rank computes class c's loss (always, except class-parallel)."""
    return not class_parallel() or c % world_size() == rank()


def data_world() -> int:
    """Ranks a real batch is split over: 1 under class-parallel (whole batches per rank)."""
    return 1 if _class_parallel else world_size()


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's share of a batch that every rank holds in full: rows rank, rank + W, ...
    (the whole batch under class-parallel)."""
    if data_world() == 1:
        return x
    return x[rank() :: world_size()]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over the ranks sharing a real batch (a new tensor; ``t`` itself in a single
    process or under class-parallel)."""
    if data_world() == 1:
        return t
    total = t.detach().clone()
    dist.all_reduce(total)
    return total


def all_reduce_sum_coalesced(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`all_reduce_sum` of several same-dtype tensors in one collective (new tensors):
    for small tensors a collective's latency, not its bytes, is the cost, and DC reduces a
    network's gradient (one tensor per parameter) for every class."""
    if data_world() == 1:
        return tensors
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    chunks = flat.split([t.numel() for t in tensors])
    return [chunk.view_as(t) for chunk, t in zip(chunks, tensors, strict=True)]


def all_reduce_max(value: int, device: torch.device) -> int:
    """The largest of the ranks' ``value`` (every rank gets it); ``value`` in one process.
    ``device``: where the collective runs (NCCL needs a CUDA device)."""
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def global_sums(local_sums: torch.Tensor) -> torch.Tensor:
    """Per-group sums over all ranks whose gradient flows into this rank's ``local_sums``.

    The value is the global sum; d(value)/d(local_sums) is the identity, so a risk of the
    global figures back-propagates exactly this rank's share of the global gradient.
    """
    if data_world() == 1:
        return local_sums
    return local_sums + (all_reduce_sum(local_sums) - local_sums.detach())


def all_reduce_grads(module: torch.nn.Module) -> None:
    """Sum the gradients of a module that is not DDP-wrapped (a sampled network) over the
    ranks sharing its real batches (none under class-parallel: each rank has them whole)."""
    if data_world() > 1:
        sum_grads(list(module.parameters()))


def sum_owned(t: torch.Tensor) -> torch.Tensor:
    """Class-parallel: the sum over ranks of a detached per-class figure that each rank holds
    for its own classes only (zeros elsewhere), e.g. for logging; else ``t``."""
    if not class_parallel():
        return t
    total = t.detach().clone()
    dist.all_reduce(total)
    return total


def average_grads(params: list[torch.Tensor]) -> None:
    """Average gradients of replicated parameters over ranks, in place.

    The matchers already give every rank the global gradient; averaging identical values is
    exact in floating point, and it keeps replicas identical where kernels are not.
    """
    if world_size() == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world_size())


def broadcast_from_rank0_(tensor: torch.Tensor) -> None:
    """Overwrite ``tensor`` with rank 0's values, in place."""
    if world_size() > 1:
        dist.broadcast(tensor.data, src=0)


class _SumForward(torch.autograd.Function):
    """Forward: sum over ranks. Backward: identity (every rank holds the same upstream
    gradient, so passing it through unchanged gives each rank's inputs their own share)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        total = t.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _SumBackward(torch.autograd.Function):
    """Forward: identity. Backward: sum over ranks (a replicated tensor used by every rank on
    its own shard collects the gradient contributions of all shards)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of per-rank partial results (e.g. shard gradients); identity in one
    process. Its backward passes the (replicated) upstream gradient through unchanged."""
    return _SumForward.apply(t) if world_size() > 1 else t


def replicated_input(t: torch.Tensor) -> torch.Tensor:
    """Mark a replicated tensor that each rank applies to its own shard: its gradient is
    summed over ranks in the backward pass; identity in one process."""
    return _SumBackward.apply(t) if world_size() > 1 else t


def sum_grads(params: list[torch.Tensor]) -> None:
    """Sum gradients of replicated parameters over ranks, in place (each rank holds a part)."""
    if world_size() == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
