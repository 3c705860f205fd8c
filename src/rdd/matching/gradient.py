"""Gradient matching: DC (Zhao et al., ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

One outer iteration samples a fresh network, then ``outer_loop`` times: match, class by class,
the gradient of the loss on a real batch against the gradient on that class's synthetic images
and take one step on the images; between matching steps the network trains ``inner_loop``
epochs on the (detached) synthetic set. DSA applies the same random augmentation to the real
and the synthetic batch of a class.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rdd.augment import DSA
from rdd.config.errors import UserError
from rdd.matching.base import DistillContext, Matcher
from rdd.matching.distance import get_distance
from rdd.matching.robust import logged_losses, real_data_loss, real_gradient
from rdd.nets import has_batchnorm
from rdd.nets.compiled import check_compile_setting, first_order
from rdd.outputs.progress import inner_steps
from rdd.parallel.device import to_device
from rdd.parallel.distributed import all_reduce_grads, owns_class, sum_owned

# (outer_loop, inner_loop) by IPC, as published for DC/DSA.
PUBLISHED_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
INITS = ("real", "noise")
# What the sampled network trains on between matching steps: the synthetic set (DC/DSA as
# published) or real data (the robust paper's mode, where the network minimises the group risk).
NET_TRAIN_DATA = ("synthetic", "real")


def check_positive(settings: dict[str, float]) -> None:
    """Every value must be > 0: a one-line error naming the `matching` key otherwise."""
    for key, value in settings.items():
        if value <= 0:
            raise UserError(
                f"matching.{key} must be positive, got {value}: set matching.{key} to a value > 0"
            )


def check_init(init: str) -> None:
    if init not in INITS:
        raise UserError(f"unknown matching.init '{init}': choose one of {', '.join(INITS)}")


def loops_for_ipc(ipc: int) -> tuple[int, int]:
    """The published (outer_loop, inner_loop) for ``ipc``, extended to any IPC.

    Between table entries both values are interpolated linearly in IPC (rounded); above 50
    the IPC-50 entry is kept (more matching steps per network bring little there and cost
    linearly).
    """
    if ipc <= 0:
        raise ValueError(f"ipc must be positive, got {ipc}")
    if ipc in PUBLISHED_LOOPS:
        return PUBLISHED_LOOPS[ipc]
    keys = sorted(PUBLISHED_LOOPS)
    if ipc > keys[-1]:
        return PUBLISHED_LOOPS[keys[-1]]
    hi = keys[bisect.bisect(keys, ipc)]
    lo = keys[bisect.bisect(keys, ipc) - 1]
    t = (ipc - lo) / (hi - lo)
    (o_lo, i_lo), (o_hi, i_hi) = PUBLISHED_LOOPS[lo], PUBLISHED_LOOPS[hi]
    return round(o_lo + t * (o_hi - o_lo)), round(i_lo + t * (i_hi - i_lo))


class GradientMatching(Matcher):
    """DC / DSA gradient matching; constructor arguments are the `matching` config keys.

    Defaults are the published CIFAR-10 ones (conf/matching/dc.yaml lists only what differs).

    Args:
        name: ``dc`` or ``dsa``.
        iterations: Outer iterations.
        init: ``real`` or ``noise`` (the DC paper used noise; both give similar accuracy).
        lr_img, momentum_img: SGD on the synthetic images.
        lr_net, momentum_net: SGD of the sampled network between matching steps (plain SGD).
        batch_real: Real images per class per matching step.
        batch_train: Batch size when training the network on the synthetic set.
        outer_loop, inner_loop: None: the published table by ipc (:func:`loops_for_ipc`).
        distance: ``layerwise`` (DC's per-output-channel 1 - cos), ``mse`` or ``cosine``.
        bn_images_per_class: Real images per class that set a BatchNorm net's statistics.
        dsa, dsa_strategy, dsa_mode: Siamese augmentation (DSA): on, its ops, one draw or all.
        net_train_data: ``synthetic``, ``real`` or ``mixed`` (set it as robust.net_train_data).
        compile_nets: Run the network's first-order passes (the real gradient, the training
            between matching steps) through ``torch.compile`` (:mod:`rdd.nets.compiled`):
            faster after a one-off compilation, equal to float rounding, not bitwise;
            ``auto``: where it repays (a run decides, :func:`rdd.nets.compiled.resolve_compile`).
    """

    def __init__(
        self,
        name: str = "dc",
        iterations: int = 1000,
        init: str = "real",
        lr_img: float = 0.1,
        momentum_img: float = 0.5,
        lr_net: float = 0.01,
        momentum_net: float = 0.0,
        batch_real: int = 256,
        batch_train: int = 256,
        outer_loop: int | None = None,
        inner_loop: int | None = None,
        distance: str = "layerwise",
        bn_images_per_class: int = 16,
        dsa: bool = False,
        dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
        dsa_mode: str = "single",
        net_train_data: str = "synthetic",
        compile_nets: bool | str = "auto",
    ) -> None:
        positive = {"iterations": iterations, "batch_real": batch_real, "batch_train": batch_train}
        positive |= {"lr_img": lr_img, "lr_net": lr_net, "bn_images_per_class": bn_images_per_class}
        check_positive(positive)
        for key, value in {"outer_loop": outer_loop, "inner_loop": inner_loop}.items():
            if value is not None and value < (1 if key == "outer_loop" else 0):
                raise ValueError(
                    f"matching.{key} must be >= 1 (or null for the published table), got {value}"
                )
        if net_train_data not in NET_TRAIN_DATA:
            raise ValueError(
                f"unknown robust.net_train_data '{net_train_data}': choose one of {', '.join(NET_TRAIN_DATA)}"
            )
        check_init(init)
        self.name, self.iterations, self.init = name, iterations, init
        self.lr_img, self.momentum_img = lr_img, momentum_img
        self.lr_net, self.momentum_net = lr_net, momentum_net
        self.batch_real, self.batch_train = batch_real, batch_train
        self.outer_loop, self.inner_loop = outer_loop, inner_loop
        self.distance = get_distance(distance)
        self.bn_images_per_class = bn_images_per_class
        self.augment = DSA(dsa_strategy, mode=dsa_mode) if dsa else None
        self.net_train_data = net_train_data
        check_compile_setting(compile_nets)
        self.compile_nets = compile_nets
        self.group_losses: list[torch.Tensor] = []  # per-subgroup matching losses of the last step

    safe_points_inside = True  # a preempted run may stop between outer steps (up to 50)

    def loops(self, ipc: int) -> tuple[int, int]:
        outer, inner = loops_for_ipc(ipc)
        return self.outer_loop or outer, inner if self.inner_loop is None else self.inner_loop

    # How a run makes this method train a network on real data (for rdd.robust.plan's errors).
    real_training_hint = (
        "DC/DSA train the network on real data with robust.net_train_data=real, between "
        "matching steps (so with ipc > 1 or matching.outer_loop > 1, and inner_loop > 0)"
    )

    def trains_on_real(self, ipc: int) -> bool:
        """Whether the sampled network ever takes a step on real data at this IPC."""
        outer, inner = self.loops(ipc)
        return self.net_train_data == "real" and outer > 1 and inner > 0

    def step(self, ctx: DistillContext) -> dict[str, float]:
        """One outer iteration; returns the mean matching loss per class."""
        net = ctx.new_net()
        stats = ctx.regroup(net)
        net.train()
        net_opt = self.net_optimizer(net)
        outer, inner = self.loops(ctx.ipc)
        losses = []
        self.group_losses = []
        for step in inner_steps(range(outer), outer, "outer steps", ctx.show_progress):
            if has_batchnorm(net):
                self.freeze_batchnorm(net, ctx)
            # a backward per class: one class's graph in memory, not every class's
            class_losses = ctx.summed_image_step(self.class_loss_terms(net, ctx))
            losses.append(sum_owned(class_losses).mean())
            if step < outer - 1:
                self.train_net(net, net_opt, ctx, inner)
                ctx.safe_point()  # where a preempted run may stop (rdd.checkpoint.preemption)
        return stats | logged_losses(torch.stack(losses).mean(), self.group_losses)

    def class_losses(self, net: nn.Module, ctx: DistillContext) -> torch.Tensor:
        """Gradient-matching loss of every class: (num_classes,), differentiable (every
        class's graph at once: :meth:`step` uses :meth:`class_loss_terms` instead)."""
        return torch.stack(list(self.class_loss_terms(net, ctx)))

    def class_loss_terms(self, net: nn.Module, ctx: DistillContext) -> Iterator[torch.Tensor]:
        """Gradient-matching loss of each class in turn: scalars, differentiable; the next is
        made only when asked for, after the caller's backward of this one.

        With a robust risk on matching, subgroups own the class's images
        (:meth:`owned_class_loss`).
        """
        params = [p for p in net.parameters() if p.requires_grad]
        real_net = first_order(net, self.compile_nets)
        for c in range(ctx.num_classes):
            if ctx.robust_matching:
                yield self.owned_class_loss(net, params, ctx, c, real_net)
                continue
            real = ctx.sample_real(c, self.batch_real)
            syn = ctx.images[c * ctx.ipc : (c + 1) * ctx.ipc]
            if self.augment is not None:
                # One transform for both batches: the siamese part of DSA.
                transform = self.augment.sample(ctx.generator, image_size=tuple(syn.shape[-2:]))
                real, syn = transform(real), transform(syn)
            if not owns_class(c):  # class-parallel: another rank's class (its draws made)
                yield syn.sum() * 0.0
                continue
            yield self.match(net, params, real, syn, c, real_net)

    def owned_class_loss(
        self,
        net: nn.Module,
        params: list[torch.Tensor],
        ctx: DistillContext,
        c: int,
        real_net: nn.Module,
    ) -> torch.Tensor:
        """Class c's loss with subgroups owning its images (:mod:`rdd.robust.ownership`): for each
        group, the distance between the gradient on its owned images and on its stratified
        real batch, weighted by its share of the class's images; one DSA transform for all."""
        batches = ctx.owned_batches(c, self.batch_real)
        transform = None
        if self.augment is not None:
            transform = self.augment.sample(ctx.generator, image_size=tuple(ctx.images.shape[-2:]))
        if not owns_class(c):
            return ctx.images.sum() * 0.0
        loss, group_log = 0.0, []
        for rows, real in batches:
            syn = ctx.images[rows]
            if transform is not None:
                real, syn = transform(real), transform(syn)
            distance = self.match(net, params, real, syn, c, real_net)
            loss = loss + distance * (len(rows) / ctx.ipc)
            group_log.append(distance.detach())
        self.group_losses.append(torch.stack(group_log))
        return loss

    def match(
        self,
        net: nn.Module,
        params: list[torch.Tensor],
        real: torch.Tensor,
        syn: torch.Tensor,
        c: int,
        real_net: nn.Module | None = None,
    ) -> torch.Tensor:
        """Distance between the loss gradients of a real (n, C, H, W) and a synthetic batch of
        class c; the real gradient through ``real_net`` (``net``'s compiled passes) if given."""
        g_real = real_gradient(net if real_net is None else real_net, params, real, c)
        g_syn = torch.autograd.grad(cross_entropy_to(net(syn), c), params, create_graph=True)
        return self.distance(g_syn, g_real)

    def freeze_batchnorm(self, net: nn.Module, ctx: DistillContext) -> None:
        """Update BatchNorm's running statistics with a real batch, then match with them.

        A class's synthetic batch (a few images) gives useless batch statistics, so matching
        uses running statistics instead. As in the reference main.py: a forward pass in train
        mode of ``bn_images_per_class`` real images per class updates them with the layers'
        own momentum (0.1), never reset, so they also keep what the inner loop's training
        steps added; then the BatchNorm layers switch to eval for the matching step.
        """
        real = torch.cat(
            [ctx.sample_real(c, self.bn_images_per_class) for c in range(ctx.num_classes)]
        )
        net.train()
        with torch.no_grad():
            net(real)
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def net_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """The sampled network's optimiser for one outer iteration (made fresh each time)."""
        return torch.optim.SGD(net.parameters(), lr=self.lr_net, momentum=self.momentum_net)

    def train_net(
        self, net: nn.Module, opt: torch.optim.Optimizer, ctx: DistillContext, epochs: int
    ) -> None:
        """Train ``net`` between matching steps, on the synthetic set or on real data."""
        net.train()
        if self.net_train_data == "real":
            self.train_net_on_real(net, opt, ctx, epochs)
            return
        images, labels = ctx.images.detach(), ctx.labels
        forward = first_order(net, self.compile_nets)
        for _ in range(epochs):
            order = to_device(torch.randperm(len(images), generator=ctx.generator), images.device)
            for batch in order.split(self.batch_train):
                x = images[batch]
                if self.augment is not None:
                    x = self.augment(x, ctx.generator)
                sgd_step(opt, F.cross_entropy(forward(x), labels[batch]))

    def train_net_on_real(
        self, net: nn.Module, opt: torch.optim.Optimizer, ctx: DistillContext, steps: int
    ) -> None:
        """``steps`` SGD steps on mixed real batches; the group risk replaces the mean when
        the risk acts on networks."""
        forward = first_order(net, self.compile_nets)
        for _ in range(steps):
            x, y, groups = ctx.sample_real_mixed(self.batch_train)
            if self.augment is not None:
                x = self.augment(x, ctx.generator)
            # every rank trains the same net on its shard; sums and counts are global
            risk = ctx.risk_for("networks") if ctx.robust_networks else None
            loss, _, _ = real_data_loss(forward, x, y, groups, ctx.num_groups, risk)
            sgd_step(opt, loss, net)


def sgd_step(opt: torch.optim.Optimizer, loss: torch.Tensor, net: nn.Module | None = None) -> None:
    """One step; with ``net`` given, its gradients are summed over ranks first."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if net is not None:
        all_reduce_grads(net)
    opt.step()


def cross_entropy_to(logits: torch.Tensor, c: int) -> torch.Tensor:
    """Mean cross-entropy of logits (n, K) against the single class c."""
    target = torch.full((logits.shape[0],), c, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
