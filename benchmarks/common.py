"""Shared set-up of the iteration benchmarks: CIFAR-10-shaped random data, a learner whose
matcher runs without a Trainer (so a figure is the algorithm's cost), and peak memory."""

from __future__ import annotations

import platform
import resource
import time
from functools import partial

import torch

from rdd.distill.learner import SyntheticSetLearner
from rdd.matching.base import backward_each
from rdd.nets import build_net

NUM_CLASSES, SHAPE = 10, (3, 32, 32)


def cifar_shaped(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (timing does not depend on pixel values) and labels, class by class."""
    gen = torch.Generator().manual_seed(0)
    real_x = torch.randn(NUM_CLASSES * per_class, *SHAPE, generator=gen)
    return real_x, torch.arange(NUM_CLASSES).repeat_interleave(per_class)


def plain_learner(matcher, init_images, real_x, real_y, ipc: int, **kwargs) -> SyntheticSetLearner:
    """A learner on ConvNet-3 w128 whose image steps are plain SGD (what the Trainer does),
    a summed loss backpropagated term by term as the learner does."""
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

    def summed_image_step(terms) -> torch.Tensor:
        opt.zero_grad()
        values = backward_each(terms, torch.Tensor.backward)
        opt.step()
        return values

    learner.summed_image_step = summed_image_step
    learner.image_step = lambda loss: summed_image_step((loss,))
    return learner


def time_steps(matcher, learner: SyntheticSetLearner, iterations: int) -> list[float]:
    """Seconds of each outer iteration (on a GPU, until its queued work has finished)."""
    times = []
    for iteration in range(iterations):
        learner.iteration = iteration
        synchronize(learner.device)
        start = time.perf_counter()
        matcher.step(learner)
        synchronize(learner.device)
        times.append(time.perf_counter() - start)
    return times


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU where there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def available_device(name: str) -> torch.device:
    """``resolve_device``, refusing what this machine cannot run on, so that a benchmark stops
    before any work rather than in its first kernel. Raises ValueError saying what to use."""
    choices = "use cpu, cuda, cuda:N or auto"
    try:
        device = resolve_device(name)
    except RuntimeError:
        raise ValueError(f"--device {name} is not a device name: {choices}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"--device {name}: only CPU and CUDA are supported: {choices}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"--device {name}: CUDA is not available here: use --device cpu or auto")
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {name}: this machine has {count} CUDA device(s): use cuda:0..")
    return device


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_mib(device: torch.device) -> float:
    """Peak memory: torch.cuda.max_memory_allocated on a GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def memory_name(device: torch.device) -> str:
    return "peak GPU memory (max_memory_allocated)" if device.type == "cuda" else "peak RSS"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"machine: {cpu}, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"
