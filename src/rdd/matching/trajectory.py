"""Matching Training Trajectories (MTT; Cazenavette et al., CVPR 2022).

Each iteration picks a random expert of the buffer (``python -m rdd.buffer``) and a random
start epoch ``t < max_start_epoch``. A student starts from the expert's parameters at ``t``
and takes ``syn_steps`` SGD steps on mini-batches of the (augmented) synthetic set with the
learned step size; the loss is how far it ends from the expert ``expert_epochs`` later,
relative to how far the expert itself moved:

    ||theta_student - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

The student is functional (``torch.func.functional_call``), so the loss is differentiable
with respect to the images and the step size through every unrolled step
(``memory=constant``: the same gradients from a reverse pass, ``rdd.matching.adjoint``).

Robust layer: with the risk on matching, the student's group risk on a clustered real batch
is added with weight ``robust_weight`` (subgroups found in the expert's feature space at the
target epoch). Robust experts (risk on networks) are made by ``rdd.buffer``.

DDP: every rank draws the same batch and takes its shard; each student step's gradient is
summed over ranks (forward) and the parameters' gradient in the backward pass too, so N ranks
give the single-process loss and gradients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rdd.augment import DSA, DSATransform
from rdd.config.errors import UserError
from rdd.experts import Trajectories, unflatten
from rdd.matching.adjoint import Batch, Params, adjoint_unroll
from rdd.matching.base import DistillContext, Matcher
from rdd.matching.gradient import check_init, check_positive
from rdd.matching.robust import risk_cross_entropy
from rdd.matching.spikes import SpikeGuard
from rdd.outputs.progress import inner_steps
from rdd.parallel.device import to_device
from rdd.parallel.distributed import replicated_input, shard, sum_over_ranks, world_size
from rdd.utils.host_memory import mapped_while_long_lived

MEMORY_MODES = ("full", "constant")


class TrajectoryMatching(Matcher):
    """MTT; constructor arguments are the `matching` config keys.

    Defaults are the published CIFAR-10 IPC 10 values (conf/experiment/mtt_* set the others).

    Args:
        name: ``mtt``.
        iterations: Outer iterations.
        init: ``real`` or ``noise``.
        lr_img, momentum_img: SGD on the synthetic images (100: published for CIFAR-10 IPC 10
            with ZCA; the README table's value is a known typo).
        lr_lr, momentum_lr: SGD on the student step size, which starts at ``lr_teacher`` and
            is kept in [lr_min, lr_max] (never negative, never exploding; lr_max None: no cap).
        syn_steps: Student steps unrolled per iteration.
        expert_epochs: The target: the expert this many epochs after the start.
        max_start_epoch: Start epochs are drawn from [0, max_start_epoch).
        batch_syn: Synthetic images per student step; None: the whole set.
        dsa, dsa_strategy, dsa_mode: Independent DSA parameters per image in every student step.
        robust_weight: Weight of the student's group risk on clustered real data.
        batch_real: Real images for that term.
        memory: ``full``: backpropagate through the whole unroll (memory grows with
            syn_steps); ``constant``: the same loss and gradients from a reverse (adjoint)
            pass that recomputes one student step at a time (``rdd.matching.adjoint``):
            memory flat in syn_steps, one more first-order pass of time.
        spike_limit: A gradient (of the images, or of the step size) above this many times
            its running mean norm is scaled down to that bound (rdd.matching.spikes: an
            unstable unroll's spike once collapsed the step size); null: off, as the
            reference. Below the bound the step is the reference's, bit for bit.
    """

    needs_experts = True
    # Each rank's image gradient covers only its shards of the synthetic batches: sum them.
    image_grad_reduction = "sum"

    def __init__(
        self,
        name: str = "mtt",
        iterations: int = 5000,
        init: str = "real",
        lr_img: float = 100.0,
        momentum_img: float = 0.5,
        lr_lr: float = 1e-5,
        momentum_lr: float = 0.5,
        lr_teacher: float = 0.001,
        lr_min: float = 1e-6,
        lr_max: float | None = None,
        syn_steps: int = 30,
        expert_epochs: int = 2,
        max_start_epoch: int = 20,
        batch_syn: int | None = None,
        dsa: bool = True,
        dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
        dsa_mode: str = "single",
        robust_weight: float = 1.0,
        batch_real: int = 256,
        memory: str = "full",
        spike_limit: float | None = 10.0,
    ) -> None:
        positive = {"iterations": iterations, "lr_img": lr_img, "lr_lr": lr_lr}
        positive |= {"lr_teacher": lr_teacher, "lr_min": lr_min, "syn_steps": syn_steps}
        positive |= {"expert_epochs": expert_epochs, "max_start_epoch": max_start_epoch}
        positive |= {"batch_real": batch_real}
        if batch_syn is not None:
            positive["batch_syn"] = batch_syn
        check_positive(positive)
        if lr_max is not None and lr_max < max(lr_min, lr_teacher):
            raise UserError(
                f"matching.lr_max={lr_max} is below lr_min or lr_teacher: raise it (or null for no cap)"
            )
        if lr_teacher < lr_min:
            raise UserError(
                f"matching.lr_teacher={lr_teacher} is below lr_min={lr_min}: lower lr_min"
            )
        if robust_weight < 0:
            raise UserError(f"matching.robust_weight must be >= 0, got {robust_weight}")
        if memory not in MEMORY_MODES:
            raise UserError(
                f"matching.memory={memory!r} is not one of {', '.join(MEMORY_MODES)}: "
                "full backpropagates through the unroll, constant recomputes it step by step"
            )
        if spike_limit is not None and not spike_limit > 1:
            raise UserError(
                f"matching.spike_limit must be > 1 (a multiple of the running mean gradient "
                f"norm) or null (off), got {spike_limit}"
            )
        check_init(init)
        self.name, self.iterations, self.init = name, iterations, init
        self.lr_img, self.momentum_img = lr_img, momentum_img
        self.lr_lr, self.momentum_lr = lr_lr, momentum_lr
        self.lr_teacher, self.lr_min, self.lr_max = lr_teacher, lr_min, lr_max
        self.syn_steps, self.expert_epochs, self.max_start_epoch = (
            syn_steps,
            expert_epochs,
            max_start_epoch,
        )
        self.batch_syn, self.batch_real, self.robust_weight = batch_syn, batch_real, robust_weight
        self.augment = DSA(dsa_strategy, mode=dsa_mode) if dsa else None
        self.memory = memory
        self.spikes = SpikeGuard(spike_limit)
        self.trajectories: Trajectories | None = None

    @property
    def initial_step_size(self) -> float:
        """The learned student step size starts at the experts' (lr_teacher)."""
        return self.lr_teacher

    def trains_on_real(self, ipc: int) -> bool:
        """MTT's networks on real data are its experts (robust experts: ``rdd.buffer``)."""
        return True

    def guard_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Cut the images' and the step size's gradient spikes (``spike_limit``)."""
        self.spikes(params)

    def state_dict(self) -> dict:
        """The spike guard's running means, for an exact resume."""
        return {"spikes": self.spikes.state_dict()}

    def load_state_dict(self, state: dict, ctx: DistillContext) -> None:
        # a checkpoint from before the guard: it starts afresh, as at a run's first step
        self.spikes.load_state_dict(state.get("spikes", {}) if state else {})

    def attach(self, trajectories: Trajectories) -> None:
        """Use these expert trajectories; they must be long enough for the start epochs."""
        self.check_expert_epochs(trajectories.epochs, made=True)
        self.trajectories = trajectories

    def check_expert_epochs(self, epochs: int, made: bool) -> None:
        """Whether experts ``epochs`` long reach every target: the last start epoch
        (max_start_epoch - 1) plus expert_epochs. ``rdd.buffer`` checks the same before it
        trains any expert (``made=False``), so a buffer it makes is one ``rdd.run`` accepts.

        Raises:
            UserError: too short; the message names the key to change.
        """
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if epochs >= needed:
            return
        need = (
            f"matching.max_start_epoch={self.max_start_epoch} and matching.expert_epochs="
            f"{self.expert_epochs} need experts of {needed} epochs"
        )
        if made:
            raise UserError(
                f"the expert buffer has {epochs} epochs but {need}: lower them or re-make the "
                f"buffer with experts.epochs={needed}"
            )
        raise UserError(
            f"experts.epochs={epochs} is too short for MTT: {need}; set experts.epochs={needed} "
            "or lower matching.max_start_epoch (the same in rdd.run)"
        )

    def step(self, ctx: DistillContext) -> dict[str, float]:
        """One iteration: unroll the student, match the expert, step images and step size."""
        if self.trajectories is None:
            raise RuntimeError("TrajectoryMatching needs attach(trajectories) before step()")
        expert = int(torch.randint(len(self.trajectories), (1,), generator=ctx.generator))
        start = int(torch.randint(self.max_start_epoch, (1,), generator=ctx.generator))
        net = ctx.new_net()
        device, dtype = ctx.images.device, ctx.images.dtype
        begin = to_device(self.trajectories.snapshot(expert, start).to(dtype), device)
        end = start + self.expert_epochs
        target = to_device(self.trajectories.snapshot(expert, end).to(dtype), device)
        stats = self.regroup(ctx, net, target) if ctx.robust_matching else {}
        net.train()
        # The unroll's saved tensors live until the image step's backward: kept out of the
        # kept heap, they do not fragment it (rdd.utils.host_memory).
        with mapped_while_long_lived():
            student = self.unroll(ctx, net, unflatten(begin, net))
        param_loss = self.normalised_distance(student, unflatten(target, net), begin, target)
        loss, logged = param_loss, {"param_loss": param_loss}
        if ctx.robust_matching and self.robust_weight > 0:
            risk = self.real_risk(ctx, net, student)
            loss = loss + self.robust_weight * risk
            logged["risk/value"] = risk
        ctx.image_step(loss)
        logged["match_loss"] = loss
        if self.spikes.cut is not None:  # gradients cut so far (images, step size)
            logged["gradient_spikes_cut"] = self.spikes.cut.sum()
        # One read from the device for all of them (float(t) would be one each).
        values = torch.stack([v.detach() for v in logged.values()]).tolist()
        return stats | dict(zip(logged, values, strict=True)) | {"start_epoch": float(start)}

    @staticmethod
    def regroup(ctx: DistillContext, net: nn.Module, target: torch.Tensor) -> dict[str, float]:
        """Cluster the real pool in the feature space of the expert at the target epoch."""
        with torch.no_grad():
            nn.utils.vector_to_parameters(target, net.parameters())
        return ctx.regroup(net)

    def unroll(self, ctx: DistillContext, net: nn.Module, begin: Params) -> Params:
        """``syn_steps`` student SGD steps on synthetic mini-batches; returns the last params."""
        if self.memory == "constant":
            return adjoint_unroll(self, ctx, net, begin)
        params = {name: p.clone().requires_grad_(True) for name, p in begin.items()}
        for idx, transform in self.minibatches(ctx):
            x, y = self.batch(ctx, idx, transform)
            params = self.student_step(net, params, x, y, len(idx), ctx.syn_lr)
        return params

    def minibatches(self, ctx: DistillContext) -> Iterator[Batch]:
        """Each student step's image indices and DSA transform, drawn from ``ctx.generator``
        as the step comes (a permutation per pass over the set, then the step's DSA draw), so
        both memory modes consume the generator identically."""
        n = len(ctx.images)
        batch = min(self.batch_syn or n, n)
        chunks: list[torch.Tensor] = []
        for _ in inner_steps(range(self.syn_steps), self.syn_steps, "unroll", ctx.show_progress):
            if not chunks:  # a new pass over the synthetic set
                chunks = list(torch.randperm(n, generator=ctx.generator).split(batch))
            idx = chunks.pop()  # the last chunk first, as distill.py pops them
            if len(idx) < world_size():
                raise UserError(
                    f"a synthetic batch of {len(idx)} images cannot be split over {world_size()} "
                    "processes: choose matching.batch_syn dividing the set into batches of at least that size"
                )
            transform = None
            if self.augment is not None:  # independent parameters per image, as published
                size = tuple(ctx.images.shape[-2:])
                transform = self.augment.sample(ctx.generator, batch_size=len(idx), image_size=size)
            yield idx, transform

    @staticmethod
    def batch(
        ctx: DistillContext,
        idx: torch.Tensor,
        transform: DSATransform | None,
        images: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's shard of the step's (augmented) images of ``images`` (default
        ``ctx.images``) and of their labels."""
        images = ctx.images if images is None else images
        x = images[to_device(idx, images.device)]
        if transform is not None:
            x = transform(x)
        return shard(x), shard(ctx.labels[to_device(idx, ctx.labels.device)])

    @staticmethod
    def student_step(
        net: nn.Module,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        batch: int,
        lr,
        create_graph: bool = True,
    ) -> Params:
        """theta - lr * grad of the batch's mean cross-entropy, kept differentiable
        (``create_graph=False``: only the value, for the constant-memory forward pass).

        ``x``/``y`` are this rank's shard of a batch of ``batch`` images: the summed shard loss
        over ``batch`` is summed over ranks, giving the gradient of the whole batch's mean.
        """
        inputs = {name: replicated_input(p) for name, p in params.items()}
        logits = functional_call(net, inputs, (x,))
        loss = F.cross_entropy(logits, y, reduction="sum") / batch
        grads = torch.autograd.grad(loss, list(inputs.values()), create_graph=create_graph)
        return {
            name: p - lr * sum_over_ranks(g)
            for (name, p), g in zip(params.items(), grads, strict=True)
        }

    @staticmethod
    def normalised_distance(
        student: Params, target: Params, begin: torch.Tensor, end: torch.Tensor
    ) -> torch.Tensor:
        """||student - target||^2 / ||begin - end||^2, summed over all parameters."""
        moved = sum(((student[name] - target[name]) ** 2).sum() for name in student)
        return moved / ((begin - end) ** 2).sum().clamp_min(torch.finfo(begin.dtype).tiny)

    def real_risk(self, ctx: DistillContext, net: nn.Module, student: Params) -> torch.Tensor:
        """The student's group risk of the cross-entropy on a real batch drawn group by group
        (at least ``robust.min_per_group`` images of every subgroup)."""
        x, y, groups = ctx.sample_real_stratified(self.batch_real)
        inputs = {name: replicated_input(p) for name, p in student.items()}
        logits = functional_call(net, inputs, (shard(x),))
        risk = ctx.risk_for("matching")
        value, _, _ = risk_cross_entropy(logits, shard(y), shard(groups), ctx.num_groups, risk)
        return value
