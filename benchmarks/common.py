"""Shared set-up of the iteration benchmarks: CIFAR-10-shaped random data, a learner whose
matcher runs without a Trainer (so a figure is the algorithm's cost), and peak memory."""

from __future__ import annotations

import platform
import resource
import time
from functools import partial

import torch

from rdd.learner import SyntheticSetLearner
from rdd.nets import build_net

NUM_CLASSES, SHAPE = 10, (3, 32, 32)


def cifar_shaped(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (timing does not depend on pixel values) and labels, class by class."""
    gen = torch.Generator().manual_seed(0)
    real_x = torch.randn(NUM_CLASSES * per_class, *SHAPE, generator=gen)
    return real_x, torch.arange(NUM_CLASSES).repeat_interleave(per_class)


def plain_learner(matcher, init_images, real_x, real_y, ipc: int, **kwargs) -> SyntheticSetLearner:
    """A learner on ConvNet-3 w128 whose image steps are plain SGD (what the Trainer does)."""
    learner = SyntheticSetLearner(
        matcher,
        partial(build_net, "convnet", SHAPE[0], NUM_CLASSES, SHAPE[1:]),
        init_images,
        real_x,
        real_y,
        NUM_CLASSES,
        ipc,
        seed=0,
        **kwargs,
    )
    opt = torch.optim.SGD([learner.images], lr=matcher.lr_img, momentum=matcher.momentum_img)

    def image_step(loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    learner.image_step = image_step
    return learner


def time_steps(matcher, learner: SyntheticSetLearner, iterations: int) -> list[float]:
    """Seconds of each outer iteration."""
    times = []
    for iteration in range(iterations):
        learner.iteration = iteration
        start = time.perf_counter()
        matcher.step(learner)
        times.append(time.perf_counter() - start)
    return times


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"machine: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
