"""Training one evaluation network on a synthetic set (the DC/DSA protocol).

Each network trains ``epochs`` epochs with SGD (momentum 0.9, weight decay 5e-4, batch 256),
the learning rate x0.1 after ``lr_decay_at`` of the epochs, DSA augmentation with independent
parameters per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from rdd.augment import DSA
from rdd.eval.metrics import ClassAccuracy
from rdd.outputs.progress import EpochBar
from rdd.utils.seeds import derived_seed


class EpochBatchSampler(Sampler[list[int]]):
    """All ``epochs`` epochs of shuffled mini-batches as one stream.

    Tiny synthetic sets give one batch per epoch; one Lightning epoch per training epoch would
    spend more time in loop overhead than in training, so the epochs are flattened here.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.epochs, self.generator = n, batch_size, epochs, generator

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        return self.epochs * self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.epochs):
            yield from torch.randperm(self.n, generator=self.generator).split(self.batch_size)


class EvalNetModule(L.LightningModule):
    """Trains one network on a synthetic set; scores it per class when validating/testing.

    Args:
        net: a freshly initialised network.
        num_classes: number of classes.
        lr, momentum, weight_decay: SGD settings.
        decay_step: optimizer step after which the learning rate is multiplied by 0.1.
        augment: DSA applied to every training batch (per-image parameters), or None.
        seed: seeds the augmentation generator (:func:`augment_seed` of the network's seed).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        decay_step: int,
        augment: DSA | None,
        seed: int,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr, self.momentum, self.weight_decay, self.decay_step = (
            lr,
            momentum,
            weight_decay,
            decay_step,
        )
        self.augment = augment
        self.aug_generator = torch.Generator().manual_seed(seed)
        # Each network is scored on one device in its own Trainer; syncing would sum the
        # states of the other ranks' identical evaluations (or wait for them) after DDP.
        self.class_metrics = ClassAccuracy(num_classes, sync_on_compute=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        # y: (B,) class indices, or (B, K) probabilities (soft labels of an imported set):
        # cross_entropy takes either, and one-hot rows give exactly the hard-label loss.
        x, y = batch
        if self.augment is not None:
            x = self.augment(x, self.aug_generator)
        return F.cross_entropy(self.net(x), y)

    def _count(self, batch: Sequence[torch.Tensor]) -> None:
        x, y = batch
        pred = self.net(x).argmax(1)
        self.correct.append((pred == y).cpu())  # loaders are unshuffled: order = dataset order
        self.class_metrics.update(pred, y)

    def on_validation_epoch_start(self) -> None:
        self.class_metrics.reset()
        self.correct: list[torch.Tensor] = []

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._count(batch)

    def test_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self._count(batch)

    def accuracy(self) -> tuple[float, torch.Tensor]:
        """(overall accuracy, per-class accuracy (K,)) in percent of the last pass; a class
        without samples scores 0."""
        return self.class_metrics.percent()

    def correct_flags(self) -> torch.Tensor:
        """(N,) bool: which samples of the last validation/test pass were classified right."""
        return torch.cat(self.correct)

    def configure_optimizers(self) -> dict[str, Any]:
        settings = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}
        opt, sched = protocol_optimizer(
            self.net.parameters(), SimpleNamespace(**settings), self.decay_step
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def init_net(make_net: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Network ``seed``'s initial weights: drawn from its own seed, the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "init"))
        return make_net()


def batch_order(n: int, eval_cfg: Any, seed: int) -> EpochBatchSampler:
    """Network ``seed``'s mini-batches of a set of n images, every epoch."""
    generator = torch.Generator().manual_seed(derived_seed(seed, "order"))
    return EpochBatchSampler(n, eval_cfg.batch_size, eval_cfg.epochs, generator)


def augment_of(eval_cfg: Any) -> DSA | None:
    """The protocol's training augmentation (its draws are seeded by :func:`augment_seed`)."""
    return DSA(eval_cfg.dsa_strategy, mode="single") if eval_cfg.dsa else None


def augment_seed(seed: int) -> int:
    """The seed of network ``seed``'s DSA parameters."""
    return derived_seed(seed, "augment")


def decay_step(eval_cfg: Any, sampler: EpochBatchSampler) -> int:
    """The optimizer step after which the learning rate is x0.1."""
    return int(eval_cfg.epochs * eval_cfg.lr_decay_at) * sampler.batches_per_epoch


def protocol_optimizer(
    params: Iterable[torch.Tensor], eval_cfg: Any, decay: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    """SGD with momentum and weight decay, lr x0.1 after ``decay`` steps (stepped per batch)."""
    opt = torch.optim.SGD(
        params, lr=eval_cfg.lr, momentum=eval_cfg.momentum, weight_decay=eval_cfg.weight_decay
    )
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[decay], gamma=0.1)


class EpochProgress(L.Callback):
    """One network's epochs on an :class:`rdd.outputs.progress.EpochBar` (the Trainer has no bar of
    its own: its one epoch holds every training epoch, EpochBatchSampler)."""

    def __init__(self, sampler: EpochBatchSampler, show: bool = True) -> None:
        self.epochs, self.steps, self.show = sampler.epochs, sampler.batches_per_epoch, show
        self.bar: EpochBar | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bar = EpochBar(self.epochs, self.steps, self.show)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.bar.step()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bar.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()


def train_eval_net(
    make_net: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    seed: int,
    show_epochs: bool = True,
) -> tuple[EvalNetModule, L.Trainer]:
    """Train one fresh network on (images (N, C, H, W), labels (N,) int64 or (N, K) float
    probabilities) by the protocol; its epochs on a bar once it has trained a few seconds
    (``show_epochs``)."""
    net = init_net(make_net, seed)
    sampler = batch_order(len(images), eval_cfg, seed)
    module = EvalNetModule(
        net,
        num_classes,
        lr=eval_cfg.lr,
        momentum=eval_cfg.momentum,
        weight_decay=eval_cfg.weight_decay,
        decay_step=decay_step(eval_cfg, sampler),
        augment=augment_of(eval_cfg),
        seed=augment_seed(seed),
    )
    loader = DataLoader(TensorDataset(images.detach().cpu(), labels.cpu()), batch_sampler=sampler)
    trainer = eval_trainer(trainer_kwargs, [EpochProgress(sampler, show_epochs)])
    trainer.fit(module, train_dataloaders=loader)
    return module, trainer


def eval_trainer(trainer_kwargs: dict[str, Any], callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A quiet one-epoch Trainer that trains (the epochs are in the sampler) or scores."""
    return L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        **trainer_kwargs,
    )
