"""Training one evaluation network on a synthetic set (the DC/DSA protocol).

Each network trains ``epochs`` epochs with SGD (momentum 0.9, weight decay 5e-4, batch 256),
the learning rate x0.1 after ``lr_decay_at`` of the epochs, DSA augmentation with independent
parameters per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from rdd.augment import DSA
from rdd.eval.metrics import ClassAccuracy
from rdd.seeds import derived_seed


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
        seed: seeds the augmentation generator.
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
        opt = torch.optim.SGD(
            self.net.parameters(),
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[self.decay_step], gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_eval_net(
    make_net: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    seed: int,
) -> tuple[EvalNetModule, L.Trainer]:
    """Train one fresh network on (images (N, C, H, W), labels (N,) int64 or (N, K) float
    probabilities) by the protocol."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "init"))
        net = make_net()
    sampler = EpochBatchSampler(
        len(images),
        eval_cfg.batch_size,
        eval_cfg.epochs,
        torch.Generator().manual_seed(derived_seed(seed, "order")),
    )
    augment = DSA(eval_cfg.dsa_strategy, mode="single") if eval_cfg.dsa else None
    module = EvalNetModule(
        net,
        num_classes,
        lr=eval_cfg.lr,
        momentum=eval_cfg.momentum,
        weight_decay=eval_cfg.weight_decay,
        decay_step=int(eval_cfg.epochs * eval_cfg.lr_decay_at) * sampler.batches_per_epoch,
        augment=augment,
        seed=derived_seed(seed, "augment"),
    )
    loader = DataLoader(TensorDataset(images.detach().cpu(), labels.cpu()), batch_sampler=sampler)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, train_dataloaders=loader)
    return module, trainer
