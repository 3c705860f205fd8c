"""IDM's queue of semi-trained networks (Zhao et al., CVPR 2023; ``queue_size > 0``).

Networks are pushed every ``generate_every`` iterations (``initial_nets`` before the first
push), ``fetch_nets`` random ones train ``train_steps`` SGD steps on mixed real batches per
iteration, and ``sampled_nets`` random ones are used for matching. Each keeps its optimizer
and its running accuracy on the real batches it trained on (the weight of IDM's CE term).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rdd.matching.base import DistillContext
from rdd.matching.gradient import sgd_step
from rdd.matching.robust import global_correct, real_data_loss
from rdd.nets.compiled import first_order


@dataclass
class QueuedNet:
    """A network of IDM's queue with its optimizer and its running training accuracy."""

    net: nn.Module
    opt: torch.optim.Optimizer
    correct: float = 0.0
    seen: float = 0.0

    @property
    def accuracy(self) -> float:
        """Percent of its real training samples classified right (before each step); 0 if none."""
        return 100.0 * self.correct / self.seen if self.seen else 0.0


class NetQueue:
    """IDM's queue of networks that keep training on real data while the images are learnt.

    Args:
        size: Most networks held; pushing into a full queue drops the oldest.
        generate_every: Push ``push`` new networks every this many iterations (and at 0).
        push: Networks pushed each time.
        initial: Networks created before the first push (the published code starts with 3).
        fetch: Random networks trained per iteration.
        train_steps: SGD steps per fetched network per iteration.
        batch: Real images per training step (all classes mixed).
        lr, momentum, weight_decay: The networks' SGD.
        reset_every: Every this many iterations (not at 0) the running accuracies restart
            from zero, as the published code resets its accuracy meters at each evaluation
            (its ``--eval_interval``), so the CE weight follows recent accuracy; 0: never.
        compile_nets: Train through ``torch.compile`` (:mod:`rdd.nets.compiled`).
    """

    def __init__(
        self,
        size: int = 100,
        generate_every: int = 30,
        push: int = 1,
        initial: int = 3,
        fetch: int = 2,
        train_steps: int = 10,
        batch: int = 256,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        reset_every: int = 0,
        compile_nets: bool | str = "auto",
    ) -> None:
        self.size, self.generate_every, self.push, self.initial = (
            size,
            generate_every,
            push,
            initial,
        )
        self.fetch, self.train_steps, self.batch = fetch, train_steps, batch
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.reset_every, self.compile_nets = reset_every, compile_nets
        self.entries: list[QueuedNet] = []

    def new_entry(self, ctx: DistillContext) -> QueuedNet:
        net = ctx.new_net()
        opt = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        return QueuedNet(net, opt)

    def refresh(self, ctx: DistillContext, iteration: int) -> None:
        """Restart the running accuracies when due; create the initial networks on first use;
        push new ones when due (in the published order)."""
        if self.reset_every and iteration > 0 and iteration % self.reset_every == 0:
            for entry in self.entries:
                entry.correct = entry.seen = 0.0
        if not self.entries and iteration == 0:
            self.entries = [self.new_entry(ctx) for _ in range(self.initial)]
        if iteration % self.generate_every == 0:
            for _ in range(self.push):
                if len(self.entries) >= self.size:
                    self.entries.pop(0)
                self.entries.append(self.new_entry(ctx))

    def state_dict(self) -> list[dict]:
        """Every queued network with its optimizer and accuracy counters (for checkpoints)."""
        return [
            {
                "net": e.net.state_dict(),
                "opt": e.opt.state_dict(),
                "correct": e.correct,
                "seen": e.seen,
            }
            for e in self.entries
        ]

    def load_state_dict(self, state: list[dict], ctx: DistillContext) -> None:
        """Rebuild the queue from :meth:`state_dict` without drawing from the run's generator."""
        self.entries = []
        for saved in state:
            with torch.random.fork_rng(devices=[]):
                net = ctx.make_net().to(ctx.device)
            net.load_state_dict(saved["net"])
            opt = torch.optim.SGD(
                net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
            opt.load_state_dict(saved["opt"])
            self.entries.append(QueuedNet(net, opt, float(saved["correct"]), float(saved["seen"])))

    def pick(self, ctx: DistillContext, n: int) -> list[QueuedNet]:
        """n distinct random networks of the queue (all of them if it holds fewer)."""
        order = torch.randperm(len(self.entries), generator=ctx.generator)[:n]
        return [self.entries[i] for i in order.tolist()]

    def train(self, ctx: DistillContext) -> None:
        """Train ``fetch`` random networks ``train_steps`` steps each on mixed real batches
        (no augmentation, as published); with the risk on networks, on the group risk."""
        risk = ctx.risk_for("networks") if ctx.robust_networks else None
        entries, correct = self.pick(ctx, self.fetch), []
        for entry in entries:
            entry.net.train()
            right = []  # kept on the device: read once per iteration, not once per step
            forward = first_order(entry.net, self.compile_nets)
            for _ in range(self.train_steps):
                x, y, groups = ctx.sample_real_mixed(self.batch)
                loss, logits, labels = real_data_loss(forward, x, y, groups, ctx.num_groups, risk)
                right.append(global_correct(logits, labels).double())
                entry.seen += float(len(x))
                sgd_step(entry.opt, loss, entry.net)
            correct.append(
                torch.stack(right).sum() if right else torch.zeros((), device=ctx.device)
            )
        # Whole counts: their sum is exact, so one addition equals the step-by-step ones.
        for entry, count in zip(
            entries, torch.stack(correct).tolist() if correct else [], strict=True
        ):
            entry.correct += count
