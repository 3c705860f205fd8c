"""Coreset baselines: random, herding and k-center selection of real images per class.

They run through the same pipeline and evaluation as the distillation methods, so every
comparison has them. Herding and k-center work in a feature space: raw pixels, a freshly
initialised network's embedding, or the embedding of the run's network trained briefly on the
real data (the usual choice in the distillation literature).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rdd.config.errors import UserError
from rdd.matching.base import Matcher

FEATURE_SPACES = ("pixels", "random_net", "trained_net")


class Coreset(Matcher):
    """Base: picks ``ipc`` training images per class; constructor takes the `matching` config."""

    is_coreset = True

    def __init__(
        self,
        name: str,
        iterations: int = 0,
        features: str = "pixels",
        feature_train_steps: int = 300,
        feature_lr: float = 0.01,
    ) -> None:
        if features not in FEATURE_SPACES:
            raise ValueError(
                f"unknown matching.features '{features}': choose one of {', '.join(FEATURE_SPACES)}"
            )
        self.name, self.features = name, features
        self.feature_train_steps, self.feature_lr = feature_train_steps, feature_lr

    def select(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_classes: int,
        ipc: int,
        generator: torch.Generator,
        new_net: Callable[[], nn.Module],
    ) -> torch.Tensor:
        """Indices into ``x`` (N, C, H, W) of ipc images per class, grouped by class: (num_classes*ipc,)."""
        feats = None if type(self) is RandomCoreset else self.embed(x, y, generator, new_net)
        chosen = []
        for c in range(num_classes):
            members = (y == c).nonzero().flatten()
            if len(members) < ipc:
                raise UserError(
                    f"class {c} has only {len(members)} training images, fewer than ipc={ipc}: "
                    "lower ipc or use a larger dataset"
                )
            local = self.pick(
                None if feats is None else feats[members], ipc, generator, len(members)
            )
            chosen.append(members[local])
        return torch.cat(chosen)

    def pick(
        self, feats: torch.Tensor | None, k: int, generator: torch.Generator, n: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def embed(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        new_net: Callable[[], nn.Module],
    ) -> torch.Tensor:
        """Features (N, D) of every image in the chosen feature space."""
        if self.features == "pixels":
            return x.flatten(1)
        net = new_net()
        if self.features == "trained_net":
            train_briefly(net, x, y, self.feature_train_steps, self.feature_lr, generator)
        net.eval()
        device = next(net.parameters()).device
        with torch.no_grad():
            return torch.cat([net.embed(b.to(device)).cpu() for b in x.split(512)])


class RandomCoreset(Coreset):
    """ipc random images per class."""

    def pick(self, feats, k, generator, n):
        return torch.randperm(n, generator=generator)[:k]


class FullDataset(Coreset):
    """The whole-dataset reference: evaluation networks train on every real training image.

    It is the upper bound that distillation papers quote next to their sets; ``ipc`` only
    sets how many images per class the preview grid shows.
    """

    whole_dataset = True

    def select(self, x, y, num_classes, ipc, generator, new_net):
        return torch.arange(len(y))


class HerdingCoreset(Coreset):
    """Herding: greedily add the image that keeps the running mean closest to the class mean."""

    def pick(self, feats, k, generator, n):
        mean = feats.mean(0)
        chosen: list[int] = []
        total = torch.zeros_like(mean)
        available = torch.ones(n, dtype=torch.bool)
        for i in range(k):
            gap = ((mean - (total + feats) / (i + 1)) ** 2).sum(1)
            gap[~available] = float("inf")
            best = int(gap.argmin())
            chosen.append(best)
            total += feats[best]
            available[best] = False
        return torch.tensor(chosen)


class KCenterCoreset(Coreset):
    """Greedy k-center: start at the image closest to the class mean, then add the farthest one."""

    def pick(self, feats, k, generator, n):
        first = int(((feats - feats.mean(0)) ** 2).sum(1).argmin())
        chosen = [first]
        nearest = ((feats - feats[first]) ** 2).sum(1)
        for _ in range(k - 1):
            far = int(nearest.argmax())
            chosen.append(far)
            nearest = torch.minimum(nearest, ((feats - feats[far]) ** 2).sum(1))
        return torch.tensor(chosen)


def train_briefly(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    generator: torch.Generator,
) -> None:
    """``steps`` SGD steps (batch 256, momentum 0.9) on the real data, for a feature extractor."""
    device = next(net.parameters()).device
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (256,), generator=generator)
        loss = F.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
