"""The one test fake of the learner: a DistillContext on fixed tensors (no Lightning).

Matcher unit tests hand a matcher this instead of a SyntheticSetLearner, so that every real
batch, network and loss is known to the test and its oracle. It implements the contract of
rdd.matching.base.DistillContext (tests/matching/test_matching.py checks that it does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from rdd.matching.base import backward_each
from rdd.risk.mean import MeanRisk


class FakeContext:
    """Synthetic ``images``/``labels`` and real ``real_x``/``real_y``/``real_groups``.

    Args:
        make_net: builds a network (unseeded); :meth:`new_net` seeds it with ``net_seed`` or,
            when that is None, with a draw from the context's generator (like the learner).
        risk: the risk for every target and class (default: the mean).
        shuffle: real batches are random draws (from ``generator``) instead of the first n.
        step_lr: :meth:`image_step` and :meth:`summed_image_step` also take an SGD step of
            this size on the images (None: image_step only records the loss, and
            summed_image_step leaves the gradient in ``images.grad``).
        robust_matching: default: whether ``risk`` is not the mean.
        owners: (len(images),) the group that owns each synthetic image (default: image i of
            class c belongs to the class's i-th group, cycling).
    """

    iteration = 0
    device = torch.device("cpu")
    show_progress = False

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real_x: torch.Tensor,
        real_y: torch.Tensor,
        real_groups: torch.Tensor | None = None,
        *,
        make_net: Callable[[], nn.Module],
        risk: nn.Module | None = None,
        robust_matching: bool | None = None,
        robust_networks: bool = False,
        num_groups: int | None = None,
        net_seed: int | None = None,
        shuffle: bool = False,
        step_lr: float | None = None,
        syn_lr: float | None = None,
        owners: torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        self.images = nn.Parameter(images.clone())
        self.labels = labels
        self.num_classes = int(labels.max()) + 1
        self.ipc = len(labels) // self.num_classes
        self.real_x, self.real_y = real_x, real_y
        self.real_groups = real_y.clone() if real_groups is None else real_groups
        self.make_net, self.net_seed = make_net, net_seed
        self.risk = risk if risk is not None else MeanRisk()
        default_robust = not isinstance(self.risk, MeanRisk)
        self.robust_matching = default_robust if robust_matching is None else robust_matching
        self.robust_networks = robust_networks
        self.num_groups = num_groups or int(self.real_groups.max()) + 1
        self.shuffle, self.step_lr = shuffle, step_lr
        self.syn_lr = (
            None if syn_lr is None else nn.Parameter(torch.tensor(syn_lr, dtype=images.dtype))
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.owners = self.default_owners() if owners is None else owners
        # every loss given to image_step, in order (summed_image_step's: the sum, detached)
        self.losses: list[torch.Tensor] = []

    @property
    def steps(self) -> int:
        return len(self.losses)

    def new_net(self) -> nn.Module:
        seed = self.net_seed
        if seed is None:
            seed = int(torch.randint(2**31, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.make_net()

    def regroup(self, net: nn.Module) -> dict[str, float]:
        return {}

    def risk_for(self, target: str, c: int | None = None) -> nn.Module:
        return self.risk

    def class_groups(self, c: int) -> torch.Tensor:
        return self.real_groups[self.real_y == c].unique()

    def draw(self, members: torch.Tensor, n: int) -> torch.Tensor:
        if self.shuffle:
            members = members[torch.randperm(len(members), generator=self.generator)]
        return members[:n]

    def sample_real(self, c: int, n: int) -> torch.Tensor:
        return self.real_x[self.draw((self.real_y == c).nonzero().flatten(), n)]

    def default_owners(self) -> torch.Tensor:
        owners = torch.empty(len(self.labels), dtype=torch.int64)
        for c in range(self.num_classes):
            groups = self.class_groups(c)
            rows = (self.labels == c).nonzero().flatten()
            owners[rows] = groups[torch.arange(len(rows)) % len(groups)]
        return owners

    def owned_batches(self, c: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every group of class c that owns images: its rows and its first n real images."""
        batches = []
        for group in self.class_groups(c).tolist():
            rows = ((self.owners == group) & (self.labels == c)).nonzero().flatten()
            members = ((self.real_y == c) & (self.real_groups == group)).nonzero().flatten()
            if len(rows):
                batches.append((rows, self.real_x[self.draw(members, n)]))
        return batches

    def sample_real_stratified(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sample_real_mixed(n)

    def sample_real_mixed(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.draw(torch.arange(len(self.real_y)), n)
        return self.real_x[idx], self.real_y[idx], self.real_groups[idx]

    def safe_point(self) -> None:
        pass  # never preempted

    def image_step(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)
        if self.step_lr is None:
            return
        self.images.grad = None
        loss.backward()
        with torch.no_grad():
            self.images -= self.step_lr * self.images.grad

    def summed_image_step(self, terms: Iterable[torch.Tensor]) -> torch.Tensor:
        """As the learner: a backward per term into a fresh ``images.grad``, one graph at a
        time; records the detached sum."""
        self.images.grad = None
        values = backward_each(terms, torch.Tensor.backward)
        self.losses.append(values.sum())
        if self.step_lr is not None:
            with torch.no_grad():
                self.images -= self.step_lr * self.images.grad
        return values
