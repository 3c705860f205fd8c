"""Distribution matching: DM (Zhao & Bilen, WACV 2023) and IDM (Zhao et al., CVPR 2023).

DM: every iteration a fresh random network embeds, class by class, a real batch and the
synthetic images (the same DSA transform on both); the loss is the squared L2 distance between
the two mean embeddings, summed over classes, and the images take one SGD step (each class's
loss backpropagated as soon as it is made, so one class's graph is in memory at a time).

IDM adds three things, each a config key here:

* partition-and-expansion (``factor``): each stored image holds ``factor x factor`` smaller
  images, upsampled before use (:mod:`rdd.distill.expansion`); evaluation expands the same way;
* a queue of semi-trained networks (``queue_size > 0``): networks are pushed every
  ``generate_every`` iterations, ``fetch_nets`` random ones train ``train_steps`` SGD steps on
  real data per iteration, and ``sampled_nets`` random ones are used for matching;
* class-aware regularisation (``ce_weight``): cross-entropy of the matching network on the
  (expanded, augmented) synthetic images, weighted by ``ce_weight`` x that network's running
  accuracy on its real training batches in percent, as in the published code.

As published, IDM steps the images once per class (``step_per_class``), DM once per iteration;
with a BatchNorm network DM embeds every class's batch in one forward (VICO's main_DM.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from rdd.augment import DSA
from rdd.config.errors import UserError
from rdd.distill.expansion import check_factor, expand
from rdd.matching.base import DistillContext, Matcher
from rdd.matching.gradient import check_init, check_positive
from rdd.matching.queue import NetQueue
from rdd.matching.robust import (
    debiased_sq_distance,
    logged_losses,
    real_embedding_stats,
    real_mean_embedding,
)
from rdd.nets import has_batchnorm
from rdd.nets.compiled import check_compile_setting, first_order
from rdd.parallel.distributed import owns_class, sum_owned


@contextmanager
def frozen(net: nn.Module) -> Iterator[nn.Module]:
    """The network's parameters need no gradient while it only embeds for matching."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def stepped(ctx: DistillContext, loss: torch.Tensor) -> torch.Tensor:
    """Take an image step on ``loss`` (IDM's step per class); its value, detached."""
    ctx.image_step(loss)
    return loss.detach()


class DistributionMatching(Matcher):
    """DM / IDM; constructor arguments are the `matching` config keys.

    Defaults are DM's published CIFAR-10 ones; conf/matching/idm.yaml changes IDM's.

    Args:
        name: ``dm`` or ``idm``.
        iterations: Outer iterations.
        init: ``real`` or ``noise``.
        lr_img, momentum_img: SGD on the synthetic images.
        batch_real: Real images per class per iteration.
        dsa, dsa_strategy, dsa_mode: Siamese augmentation of the real and synthetic batches.
        factor: Each stored image holds factor x factor downscaled images (1: no expansion).
        ce_weight: Weight of the cross-entropy term, x the matching net's real-data accuracy.
        step_per_class: One image step per class (IDM) instead of one on the summed loss.
        queue_size: Networks held (0: a fresh random network every iteration).
        generate_every: Push a new random network every this many iterations.
        push_nets: Networks pushed each time.
        initial_nets: Networks created before the first push (IDM's published code).
        fetch_nets, train_steps: Queue networks trained per iteration, for this many SGD steps
            each, on mixed real batches without augmentation.
        sampled_nets: Networks used for matching per iteration.
        batch_train: Real images per training step of a queue network.
        lr_net, momentum_net, weight_decay_net: SGD of the queue networks.
        accuracy_reset_every: The queue networks' running accuracy (the CE weight) restarts
            every this many iterations: IDM's code resets its meters at each evaluation,
            ``--eval_interval`` 100 (500 at IPC 50, conf/experiment/idm_*_ipc50); 0: never.
        compile_nets: Embed (real and synthetic) and train the queue networks through
            ``torch.compile`` (:mod:`rdd.nets.compiled`): faster after a one-off compilation,
            equal to float rounding, not bitwise; ``auto``: where it repays (a run decides).
    """

    def __init__(
        self,
        name: str = "dm",
        iterations: int = 20000,
        init: str = "real",
        lr_img: float = 1.0,
        momentum_img: float = 0.5,
        batch_real: int = 256,
        dsa: bool = True,
        dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
        dsa_mode: str = "single",
        factor: int = 1,
        ce_weight: float = 0.0,
        step_per_class: bool = False,
        queue_size: int = 0,
        generate_every: int = 30,
        push_nets: int = 1,
        initial_nets: int = 3,
        fetch_nets: int = 2,
        train_steps: int = 10,
        sampled_nets: int = 1,
        batch_train: int = 256,
        lr_net: float = 0.01,
        momentum_net: float = 0.9,
        weight_decay_net: float = 5e-4,
        accuracy_reset_every: int = 100,
        compile_nets: bool | str = "auto",
    ) -> None:
        positive = {"iterations": iterations, "lr_img": lr_img, "batch_real": batch_real}
        positive |= {"generate_every": generate_every, "sampled_nets": sampled_nets}
        positive |= {"batch_train": batch_train, "lr_net": lr_net}
        check_positive(positive)
        non_negative = {"ce_weight": ce_weight, "queue_size": queue_size, "push_nets": push_nets}
        non_negative |= {"initial_nets": initial_nets, "fetch_nets": fetch_nets}
        non_negative |= {"train_steps": train_steps, "weight_decay_net": weight_decay_net}
        non_negative |= {"accuracy_reset_every": accuracy_reset_every}
        for key, value in non_negative.items():
            if value < 0:
                raise UserError(
                    f"matching.{key} must be >= 0, got {value}: set matching.{key} to 0 or more"
                )
        check_init(init)
        self.name, self.iterations, self.init = name, iterations, init
        self.lr_img, self.momentum_img, self.batch_real = lr_img, momentum_img, batch_real
        self.augment = DSA(dsa_strategy, mode=dsa_mode) if dsa else None
        self.factor = check_factor(factor)
        self.ce_weight, self.step_per_class = ce_weight, step_per_class
        check_compile_setting(compile_nets)
        self.sampled_nets, self.compile_nets = sampled_nets, compile_nets
        self.queue = (
            NetQueue(
                size=queue_size,
                generate_every=generate_every,
                push=push_nets,
                initial=initial_nets,
                fetch=fetch_nets,
                train_steps=train_steps,
                batch=batch_train,
                lr=lr_net,
                momentum=momentum_net,
                weight_decay=weight_decay_net,
                reset_every=accuracy_reset_every,
                compile_nets=compile_nets,
            )
            if queue_size > 0
            else None
        )
        self.group_losses: list[torch.Tensor] = []  # per-subgroup losses of the last step

    real_training_hint = "DM trains no network; IDM's queue does (matching=idm, fetch_nets > 0)"

    def trains_on_real(self, ipc: int) -> bool:
        """Whether IDM's queue trains networks on real data (DM matches with fresh ones)."""
        q = self.queue
        return q is not None and q.fetch > 0 and q.train_steps > 0

    # -- one outer iteration -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """IDM's queue (DM keeps nothing between iterations)."""
        return {"queue": self.queue.state_dict() if self.queue is not None else []}

    def load_state_dict(self, state: dict, ctx: DistillContext) -> None:
        if self.queue is not None:
            self.queue.load_state_dict(state["queue"], ctx)

    def step(self, ctx: DistillContext) -> dict[str, float]:
        """Match with a fresh network (DM) or queue networks (IDM), then train the queue."""
        self.group_losses = []
        if self.queue is None:
            nets = [(ctx.new_net(), 0.0)]
        else:
            self.queue.refresh(ctx, ctx.iteration)
            nets = [(e.net, e.accuracy) for e in self.queue.pick(ctx, self.sampled_nets)]
        stats: dict[str, float] = {}
        losses = []
        for net, accuracy in nets:
            stats |= ctx.regroup(net)
            losses.append(self.match_and_step(net, accuracy, ctx))
        if self.queue is not None:
            self.queue.train(ctx)
            stats["queue_size"] = float(len(self.queue.entries))
            # the CE term's weight follows this (percent; 0 for networks not trained yet)
            stats["queue_accuracy"] = sum(acc for _, acc in nets) / len(nets)
        return stats | logged_losses(torch.stack(losses).mean(), self.group_losses)

    def match_and_step(self, net: nn.Module, accuracy: float, ctx: DistillContext) -> torch.Tensor:
        """The matching loss of every class through ``net``, and the image step(s)."""
        net.train()
        if has_batchnorm(net) and self.batchnorm_branch(ctx):
            with frozen(net):
                loss = self.joint_loss(net, ctx)
                ctx.image_step(loss)
            return loss.detach() / ctx.num_classes
        with frozen(net):
            terms = (self.class_loss(net, accuracy, ctx, c) for c in range(ctx.num_classes))
            if self.step_per_class:
                losses = torch.stack([stepped(ctx, loss) for loss in terms])
            else:  # a backward per class: one class's graph in memory, not every class's
                losses = ctx.summed_image_step(terms)
        return sum_owned(losses).mean()

    def batchnorm_branch(self, ctx: DistillContext) -> bool:
        """DM's published BatchNorm branch applies: one image step on the plain loss (no
        per-class steps, CE term or subgroup risk, which need a forward per class)."""
        return not (self.step_per_class or self.ce_weight > 0 or ctx.robust_matching)

    def joint_loss(self, net: nn.Module, ctx: DistillContext) -> torch.Tensor:
        """DM's loss for a BatchNorm network, as VICO's main_DM.py computes it: every class's
        (augmented) real batch goes through one forward and every synthetic batch through
        another, so BatchNorm's batch statistics span all classes (a class's few synthetic
        images alone would give useless ones); then the per-class mean embeddings are matched.
        Random draws come in the per-class order of :meth:`class_loss`."""
        reals, syns = [], []
        for c in range(ctx.num_classes):
            real, syn, _ = self.class_batches(ctx, c, ctx.sample_real(c, self.batch_real))
            reals.append(real)
            syns.append(syn)
        passes = first_order(net, self.compile_nets)
        with torch.no_grad():
            real_embed = passes.embed(torch.cat(reals)).split([len(r) for r in reals])
        syn_embed = passes.embed(torch.cat(syns)).split([len(s) for s in syns])
        return sum(
            ((r.mean(0) - s.mean(0)) ** 2).sum() for r, s in zip(real_embed, syn_embed, strict=True)
        )

    def class_batches(
        self, ctx: DistillContext, c: int, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class c's real batch and its (expanded) synthetic images with their labels, both
        batches under one DSA transform (the siamese part of DSA)."""
        rows = slice(c * ctx.ipc, (c + 1) * ctx.ipc)
        syn, syn_labels = expand(ctx.images[rows], ctx.labels[rows], self.factor)
        if self.augment is not None:
            transform = self.augment.sample(ctx.generator, image_size=tuple(syn.shape[-2:]))
            real, syn = transform(real), transform(syn)
        return real, syn, syn_labels

    def class_loss(
        self, net: nn.Module, accuracy: float, ctx: DistillContext, c: int
    ) -> torch.Tensor:
        """Squared distance of mean embeddings for class c (with a robust risk, of each
        subgroup's owned images against its own real images), plus the weighted
        cross-entropy on its synthetic images."""
        if ctx.robust_matching:
            return self.owned_class_loss(net, accuracy, ctx, c)
        real, syn, syn_labels = self.class_batches(ctx, c, ctx.sample_real(c, self.batch_real))
        if not owns_class(c):  # class-parallel: another rank's class (its draws made)
            return syn.sum() * 0.0
        passes = first_order(net, self.compile_nets)
        syn_embed = passes.embed(syn)
        loss = ((real_mean_embedding(passes, real) - syn_embed.mean(0)) ** 2).sum()
        return loss + self.class_term(net, syn_embed, syn_labels, accuracy)

    def class_term(
        self, net: nn.Module, syn_embed: torch.Tensor, labels: torch.Tensor, accuracy: float
    ) -> torch.Tensor | float:
        """IDM's class-aware term: CE on the synthetic logits x the net's real accuracy."""
        if self.ce_weight > 0 and accuracy > 0:
            return self.ce_weight * accuracy * F.cross_entropy(net.classifier(syn_embed), labels)
        return 0.0

    def owned_class_loss(
        self, net: nn.Module, accuracy: float, ctx: DistillContext, c: int
    ) -> torch.Tensor:
        """Class c's loss with subgroups owning its images (:mod:`rdd.robust.ownership`): for each
        group, the squared distance between the mean embedding of its owned (expanded) images
        and that of its stratified real batch, weighted by its share of the class's images
        (so an image steps as far as in the base method); every group sees one DSA transform."""
        batches = ctx.owned_batches(c, self.batch_real)
        transform = None
        if self.augment is not None:
            size = tuple(ctx.images.shape[-2:])
            transform = self.augment.sample(ctx.generator, image_size=size)
        if not owns_class(c):
            return ctx.images.sum() * 0.0
        passes = first_order(net, self.compile_nets)
        loss, embeds, labels, group_log = 0.0, [], [], []
        for rows, real in batches:
            syn, syn_labels = expand(ctx.images[rows], ctx.labels[rows], self.factor)
            if transform is not None:
                real, syn = transform(real), transform(syn)
            syn_embed = passes.embed(syn)
            real_mean, noise = real_embedding_stats(passes, real)
            distance = ((real_mean - syn_embed.mean(0)) ** 2).sum()
            loss = loss + distance * (len(rows) / ctx.ipc)
            group_log.append(debiased_sq_distance(real_mean, noise, syn_embed.detach().mean(0)))
            embeds.append(syn_embed)
            labels.append(syn_labels)
        self.group_losses.append(torch.stack(group_log))
        return loss + self.class_term(net, torch.cat(embeds), torch.cat(labels), accuracy)
