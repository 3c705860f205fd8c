"""SyntheticSetLearner: the Lightning system that optimises the synthetic images.

Manual optimization: one training step is one outer iteration of the matching method, which
decides itself how often it steps the images (DC: ``outer_loop`` times). The learner owns the
synthetic images (a registered parameter), the real data (a non-persistent buffer, so it
follows the module to its device) and the run's CPU random generator; the matcher owns the
algorithm. Networks sampled per step are built here but never registered as submodules.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from rdd.config.errors import NonFiniteError
from rdd.distill.realpool import RealPool
from rdd.matching.base import backward_each
from rdd.outputs.loggers import log_group_losses
from rdd.parallel.device import module_to_device, to_device
from rdd.parallel.distributed import (
    average_grads,
    broadcast_from_rank0_,
    rank,
    set_class_parallel,
    sum_grads,
)
from rdd.risk.mean import MeanRisk
from rdd.robust.ownership import AllocationSettings, Ownership, revisit_allocation
from rdd.robust.plan import RiskSlots, RobustPlan
from rdd.synset import class_grouped_labels
from rdd.utils.seeds import derived_seed

# The learner's random streams: the base method's, and the robust layer's own.
GENERATORS = ("generator", "robust_generator")


def generator_from_bytes(state: bytes) -> torch.Generator:
    generator = torch.Generator()
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator


class SyntheticSetLearner(L.LightningModule):
    """Learns ``num_classes * ipc`` synthetic images with a matcher.

    Args:
        matcher: a matching method (e.g. GradientMatching) with ``step(ctx)``, ``iterations``,
            ``lr_img`` and ``momentum_img``.
        make_net: builds a fresh, randomly initialised network (on the CPU).
        init_images: (num_classes * ipc, C, H, W) starting images, grouped by class.
        real_x: (N, C, H, W) normalised real training images; real_y: (N,) labels.
        num_classes, ipc: shape of the synthetic set.
        seed: seeds the learner's generator (real batches, networks, augmentation).
        risk: the group risk (default: the mean, i.e. the base method exactly).
        clusterer: finds the subgroups of the real data (default: one group per class).
        plan: where the risk acts (:func:`rdd.robust.plan.resolve_targets`); default: nowhere.
        allocation: how subgroups own synthetic images when the risk acts on matching
            (:mod:`rdd.robust.ownership`); default: :class:`AllocationSettings` ().
        altered: bool (N,), the known rare subgroup of the real images (``data.subgroup``),
            used only to log how well the clustering finds it.
    """

    def __init__(
        self,
        matcher,
        make_net: Callable[[], nn.Module],
        init_images: torch.Tensor,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
        num_classes: int,
        ipc: int,
        seed: int,
        risk: nn.Module | None = None,
        clusterer: nn.Module | None = None,
        plan: RobustPlan | None = None,
        allocation: AllocationSettings | None = None,
        altered: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.matcher = matcher
        self.make_net = make_net
        self.num_classes, self.ipc = num_classes, ipc
        self.images = nn.Parameter(init_images.clone())
        # MTT learns the student's step size together with the images.
        lr_init = matcher.initial_step_size
        self.syn_lr = None if lr_init is None else nn.Parameter(torch.tensor(float(lr_init)))
        # Called on rank 0 with (images, labels, learned lr, iteration) when the run must stop
        # on NaN/Inf, so the last good set is kept (rdd.run saves it).
        self.on_nonfinite: Callable | None = None
        self.register_buffer("labels", class_grouped_labels(num_classes, ipc), persistent=False)
        self.register_buffer("real_x", real_x, persistent=False)
        self.real_y = real_y.cpu()  # labels and group bookkeeping stay on the CPU; images move
        # Draws real batches (as the base method does) and knows every image's subgroup.
        self.pool = RealPool(self.real_y, num_classes, altered)
        # One CPU generator for every draw, so results do not depend on the device.
        self.generator = torch.Generator().manual_seed(seed)
        # The robust layer's own draws (stratified real batches, the allocation's measurement,
        # restarted images) come from a stream of their own: a robust run whose groups own no
        # image then draws what the base method draws, and differs from it only by what the
        # allocation buys (rdd.robust.ownership).
        self.robust_generator = torch.Generator().manual_seed(derived_seed("robust", seed))
        plan = plan if plan is not None else RobustPlan()
        self.robust_matching, self.robust_networks = plan.matching, plan.networks
        # One risk per (target, class), so that stateful risks never mix unrelated groups.
        self.risks = RiskSlots(risk if risk is not None else MeanRisk())
        # Without a plan the mean ignores groups: skip clustering, so that risk=none draws
        # exactly the random numbers of the base method and reproduces it bit for bit.
        self.clusterer = clusterer if plan.active else None
        # With the risk on matching, every synthetic image belongs to one subgroup.
        self.ownership = (
            Ownership(
                num_classes,
                ipc,
                allocation or AllocationSettings(),
                fixed=bool(getattr(clusterer, "groups_are_images", False)),
            )
            if plan.matching
            else None
        )
        self.discovery: dict[str, float] = {}  # the last fit's purity/recall of the rare group
        self.iteration = 0
        self.show_progress = True  # rdd.run.distill: the Trainer's enable_progress_bar
        self.class_parallel = False  # trainer.class_parallel: each rank owns some classes
        # A resumed run (rdd.checkpoint.state.restore) starts later, with optimizer and matcher
        # states that can be applied only once training has started.
        self.start_iteration = 0
        self.pending_optimizer_states: list[dict] | None = None
        self.pending_matcher_state: dict | None = None
        # Set by rdd.checkpoint.preemption while training: stops the run at a safe point when asked to.
        self.on_safe_point: Callable[[], None] | None = None

    # -- pickling, for DDP's spawned processes -------------------------------------------------
    def __getstate__(self) -> dict:
        # torch.multiprocessing pickles a torch.Generator's state tensor through shared memory
        # that is released as soon as that temporary tensor dies, before the child reads it;
        # plain bytes are copied instead.
        state = super().__getstate__()
        for name in GENERATORS:
            state[name] = state[name].get_state().numpy().tobytes()
        return state

    def __setstate__(self, state: dict) -> None:
        generators = {name: generator_from_bytes(state.pop(name)) for name in GENERATORS}
        super().__setstate__(state)
        for name, generator in generators.items():
            setattr(self, name, generator)
        # Tensors outside registered modules (Lightning copies theirs) arrive in memory shared
        # by the spawned ranks, and SGD keeps a CPU momentum tensor it is given: private copies,
        # or a resumed DDP run's ranks all update one buffer (it ended 0.02 off).
        copied = ("pending_optimizer_states", "pending_matcher_state", "risks", "pool", "ownership")
        for name in copied:
            setattr(self, name, copy.deepcopy(getattr(self, name)))

    # -- the context the matcher works with ---------------------------------------------------
    def new_net(self, generator: torch.Generator | None = None) -> nn.Module:
        """A fresh network seeded from the run's generator, or ``generator`` (same on every
        rank), on our device."""
        generator = self.generator if generator is None else generator
        net_seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(net_seed)
            net = self.make_net()
        return module_to_device(net, self.device)

    @property
    def num_groups(self) -> int:
        """Subgroups of the real data: C before the first fit (or for the base method)."""
        return self.pool.num_groups

    def class_groups(self, c: int) -> torch.Tensor:
        """The group ids of class c, (groups_per_class,), on our device."""
        return to_device(self.pool.class_groups(c), self.device)

    def risk_for(self, target: str, c: int | None = None) -> nn.Module:
        """The risk that weighs ``target``'s groups ("matching": class c's; "networks": all)."""
        return self.risks.get(target, c, self.num_groups)

    def sample_real(self, c: int, n: int) -> torch.Tensor:
        """A random batch of up to n real images of class c: (n, C, H, W)."""
        return self.real_images(self.pool.draw(c, n, self.generator))

    def regroup(self, net: nn.Module) -> dict[str, float]:
        """Refit the subgroups with ``net``'s features when the clusterer is due, then
        revisit the synthetic images' owners when the allocation is due."""
        if self.clusterer is None:
            return {}
        stats: dict[str, float] = {}
        if self.clusterer.due(self.iteration):
            synthetic = (self.images.detach(), self.labels)
            stats = self.pool.refit(self.clusterer, self.real_x, net, self.iteration, synthetic)
            self.discovery = {k: v for k, v in stats.items() if k.startswith("cluster/rare_")}
            if self.ownership is not None:
                self.pool.warn_small_groups(self.ownership.settings.min_per_group)
            if not self.clusterer.ids_persist:
                self.risks.reset()  # the new ids name other subgroups: restart the risk
        if self.ownership is not None:
            stats |= revisit_allocation(self)
        return stats

    def owned_batches(self, c: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Class c's owners of images: (their rows in the set, a real batch). A group's batch
        is its part of a stratified draw of about n real images (:meth:`RealPool.draw_stratified`);
        the shared images' batch is n real images of the whole class, as the base method draws."""
        assert self.ownership is not None, "owned_batches needs the risk on matching"
        minimum = self.ownership.settings.min_per_group
        draws = self.pool.draw_stratified(c, n, minimum, self.robust_generator)
        batches = []
        shared = self.ownership.shared_rows(c)
        if len(shared):
            idx = self.pool.draw(c, n, self.generator)
            batches.append((to_device(shared, self.device), self.real_images(idx)))
        for group, idx in zip(self.pool.class_groups(c).tolist(), draws, strict=True):
            rows = self.ownership.rows_of(group)
            if len(rows) and len(idx):
                batches.append((to_device(rows, self.device), self.real_images(idx)))
        return batches

    def sample_real_stratified(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """About n real images of all classes, drawn group by group (at least
        ``robust.min_per_group`` per group): images, labels and group ids."""
        minimum = self.ownership.settings.min_per_group if self.ownership else 1
        per_class = max(1, n // self.num_classes)
        idx = torch.cat(
            [
                torch.cat(self.pool.draw_stratified(c, per_class, minimum, self.robust_generator))
                for c in range(self.num_classes)
            ]
        )
        return (
            self.real_images(idx),
            to_device(self.real_y[idx], self.device),
            to_device(self.pool.groups[idx], self.device),
        )

    def sample_real_mixed(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n random real images of any class: images, labels and group ids."""
        idx = self.pool.draw_mixed(n, self.generator)
        return (
            self.real_images(idx),
            to_device(self.real_y[idx], self.device),
            to_device(self.pool.groups[idx], self.device),
        )

    def real_images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.real_x[to_device(idx, self.real_x.device)]

    def image_step(self, loss: torch.Tensor) -> None:
        """One optimizer step on the synthetic images (and MTT's step size) for ``loss``."""
        self.summed_image_step((loss,))

    def summed_image_step(self, terms: Iterable[torch.Tensor]) -> torch.Tensor:
        """One optimizer step for the sum of ``terms``, each backpropagated as soon as it is
        made (:func:`~rdd.matching.base.backward_each`: one class's graph in memory, not all);
        returns the detached terms (n,).

        A non-finite loss, or images or step size that a step made non-finite, stop the run
        with the last finite values put back (see :meth:`stop_nonfinite`). Both are read in
        one flag after the step (one host-device synchronisation per image step): a
        non-finite loss makes the step's values non-finite too, and they are put back.
        """
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        values = backward_each(terms, self.manual_backward)
        loss = values.sum()
        self.reduce_grads()
        self.matcher.guard_gradients(self.learned_parameters())
        self.scale_represented_steps()
        last_good = [p.detach().clone() for p in self.learned_parameters()]
        for opt in optimizers:
            opt.step()
        self.bound_step_size()
        finite = [torch.isfinite(loss)] + [
            torch.isfinite(p).all() for p in self.learned_parameters()
        ]
        if not torch.stack(finite).all():
            with torch.no_grad():
                for param, good in zip(self.learned_parameters(), last_good, strict=True):
                    param.copy_(good)
            if not torch.isfinite(loss):
                self.stop_nonfinite(f"the matching loss became {loss.item()}")
            self.stop_nonfinite("an image step made the images or the step size non-finite")
        return values

    def scale_represented_steps(self) -> None:
        """Scale the gradient of the represented images (robust.allocation.represent_step):
        with SGD and momentum that scales their steps, so they stay nearer their group's start."""
        scale = self.ownership.step_scale() if self.ownership is not None else None
        if scale is None or self.images.grad is None:
            return
        with torch.no_grad():
            shape = (-1,) + (1,) * (self.images.dim() - 1)
            self.images.grad.mul_(scale.to(self.images.grad).view(shape))

    def safe_point(self) -> None:
        """A point inside an iteration where the run may stop (Matcher.safe_points_inside)."""
        if self.on_safe_point is not None:
            self.on_safe_point()

    def learned_parameters(self) -> list[nn.Parameter]:
        return [self.images] + ([self.syn_lr] if self.syn_lr is not None else [])

    @property
    def learned_lr(self) -> float | None:
        """MTT's learned student step size (None for the other methods)."""
        return None if self.syn_lr is None else float(self.syn_lr.detach())

    def reduce_grads(self) -> None:
        """DDP: make every rank's gradients the global ones.

        Most matchers give every rank the full image gradient (averaged: exact, and it keeps
        replicas identical); MTT's ranks each hold their shards' part (summed).
        """
        if self.matcher.image_grad_reduction == "sum" or self.class_parallel:
            # MTT and class-parallel: each rank holds a part of the image gradient.
            sum_grads([self.images])
        else:
            average_grads([self.images])
        if self.syn_lr is not None:
            average_grads([self.syn_lr])

    def bound_step_size(self) -> None:
        """Keep the learned step size in [lr_min, lr_max]: a negative step size would train
        the student uphill, and a huge one makes it diverge."""
        if self.syn_lr is not None:
            with torch.no_grad():
                self.syn_lr.clamp_(min=self.matcher.lr_min, max=self.matcher.lr_max)

    def stop_nonfinite(self, what: str) -> None:
        """Hand the last good set to ``on_nonfinite`` (rank 0) and stop with a clear error."""
        if self.on_nonfinite is not None and rank() == 0:
            self.on_nonfinite(
                self.images.detach().cpu(), self.labels.cpu(), self.learned_lr, self.iteration
            )
        raise NonFiniteError(
            f"{what} at iteration {self.iteration}: lower matching.lr_img"
            + (" or matching.lr_lr" if self.syn_lr is not None else "")
            + " (or check the data for NaN/Inf)"
        )

    # -- Lightning hooks ---------------------------------------------------------------------
    def on_fit_start(self) -> None:
        set_class_parallel(self.class_parallel)  # in this rank's process (spawned or launched)
        # DDP: the ranks start from rank 0's images (they are seeded alike; this makes it certain).
        for param in self.learned_parameters():
            broadcast_from_rank0_(param)

    def on_fit_end(self) -> None:
        set_class_parallel(False)  # a launched rank 0 evaluates next, in this process

    def on_train_start(self) -> None:
        # A resumed run logs its rows at their iteration (Lightning would count from 0 again:
        # the logger's step is the count of batches this fit has run).
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = self.start_iteration
        self.apply_pending_states()  # a resumed run: optimizers exist only now

    def apply_pending_states(self) -> None:
        """The optimizer and matcher states of :func:`rdd.checkpoint.state.load_training_state`,
        once training has started (configure_optimizers ran in fit; the matcher's tensors go to
        the device)."""
        if self.pending_optimizer_states is not None:
            states = self.pending_optimizer_states
            for opt, state in zip(self.optimizer_list(), states, strict=True):
                opt.load_state_dict(state)
            self.pending_optimizer_states = None
        if self.pending_matcher_state is not None:
            self.matcher.load_state_dict(self.pending_matcher_state, self)
        self.pending_matcher_state = None

    def train_dataloader(self) -> DataLoader:
        # Each "batch" is just the iteration number: the matcher draws its own real batches.
        iterations = range(self.start_iteration, self.matcher.iterations)
        return DataLoader(iterations, batch_size=None, shuffle=False)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.iteration = int(batch)
        stats = self.matcher.step(self)
        # "risk/..." and "cluster/..." keep their prefix; the rest is train/...
        named = {k if "/" in k else f"train/{k}": v for k, v in stats.items()}
        self.log("train/match_loss", named.pop("train/match_loss"), prog_bar=True, on_step=True)
        if self.syn_lr is not None:
            named["train/syn_lr"] = self.learned_lr
        self.log_dict(named, on_step=True)
        log_group_losses(self.loggers, self.matcher.group_losses)

    def optimizer_list(self) -> list[torch.optim.Optimizer]:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return [getattr(opt, "optimizer", opt) for opt in optimizers]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        images = torch.optim.SGD(
            [self.images], lr=self.matcher.lr_img, momentum=self.matcher.momentum_img
        )
        if self.syn_lr is None:
            return [images]
        step_size = torch.optim.SGD(
            [self.syn_lr], lr=self.matcher.lr_lr, momentum=self.matcher.momentum_lr
        )
        return [images, step_size]
