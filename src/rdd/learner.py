"""SyntheticSetLearner: the Lightning system that optimises the synthetic images.

Manual optimization: one training step is one outer iteration of the matching method, which
decides itself how often it steps the images (DC: ``outer_loop`` times). The learner owns the
synthetic images (a registered parameter), the real data (a non-persistent buffer, so it
follows the module to its device) and the run's CPU random generator; the matcher owns the
algorithm. Networks sampled per step are built here but never registered as submodules.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from rdd.synset import class_grouped_labels


class ClassIndex:
    """Indices of each class's samples, for drawing per-class real batches."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.members = [(labels == c).nonzero().flatten() for c in range(num_classes)]

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to n distinct random indices of class c (all of them if the class is smaller)."""
        members = self.members[c]
        return members[torch.randperm(len(members), generator=generator)[:n]]


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
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.matcher = matcher
        self.make_net = make_net
        self.num_classes, self.ipc = num_classes, ipc
        self.images = nn.Parameter(init_images.clone())
        self.register_buffer("labels", class_grouped_labels(num_classes, ipc), persistent=False)
        self.register_buffer("real_x", real_x, persistent=False)
        self.real_index = ClassIndex(real_y, num_classes)
        # One CPU generator for every draw, so results do not depend on the device.
        self.generator = torch.Generator().manual_seed(seed)

    # -- the context the matcher works with ---------------------------------------------------
    def new_net(self) -> nn.Module:
        """A fresh network seeded from the run's generator (same on every rank), on our device."""
        net_seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(net_seed)
            net = self.make_net()
        return net.to(self.device)

    def sample_real(self, c: int, n: int) -> torch.Tensor:
        """A random batch of up to n real images of class c: (n, C, H, W)."""
        idx = self.real_index.sample(c, n, self.generator)
        return self.real_x[idx.to(self.real_x.device)]

    def image_step(self, loss: torch.Tensor) -> None:
        """One optimizer step on the synthetic images for ``loss``."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"matching loss became {loss.item()} at iteration {self.global_step}: lower "
                "matching.lr_img or check the data for NaN/Inf"
            )
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    # -- Lightning hooks ---------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        # Each "batch" is just the iteration number: the matcher draws its own real batches.
        return DataLoader(range(self.matcher.iterations), batch_size=None, shuffle=False)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        stats = self.matcher.step(self)
        self.log_dict({f"train/{k}": v for k, v in stats.items()}, prog_bar=True, on_step=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            [self.images], lr=self.matcher.lr_img, momentum=self.matcher.momentum_img
        )
