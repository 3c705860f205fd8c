"""Evaluation networks trained in parallel, one per device (``eval.devices``).

Every evaluation network is independent: its initial weights, batch order and DSA draws come
from its own seed (rdd.eval.training), so networks can train in any process, in any order,
and end with the weights the one-by-one evaluation gives them. Here each of N worker
processes owns one device (``cuda:i`` under a GPU accelerator; on the CPU, N processes that
split the cores between them) and trains the networks handed to it; the trained weights come
back to this process, which scores them exactly as it scores its own (same code, same test
loaders). Results arrive in the order of the one-by-one evaluation.

Workers are spawned (a CUDA context does not survive a fork) and ignore Ctrl-C: the main
process stops them, and says what the evaluation kept (rdd.eval.scoring); a main process
killed outright takes them with it (rdd.parallel.lifeline).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rdd.config.errors import UserError
from rdd.eval.stacked import eval_device
from rdd.eval.training import EvalNetModule, init_net, train_eval_net
from rdd.parallel.lifeline import die_with_parent

_worker_device: dict[str, Any] = {}  # this worker's trainer settings (set by _start_worker)


@dataclass(frozen=True)
class Job:
    """One evaluation network to train: the factory, the set, the protocol and its seed."""

    make_net: Callable[[], nn.Module]
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    eval_cfg: Any
    trainer_kwargs: dict[str, Any]
    seed: int


def worker_devices(eval_cfg: Any, trainer_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """The Trainer device settings of each worker, or [] to train in this process.

    ``eval.devices``: 1 (default) trains here; N > 1 uses N GPUs under a GPU accelerator (or
    ``auto`` with GPUs present), else N CPU processes; -1: every visible GPU (one process on a
    machine without). Refused with ``eval.batched_nets=true``, which trains the networks
    together on one device.
    """
    wanted = eval_cfg.get("devices", 1)
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted == 0 or wanted < -1:
        raise UserError(
            f"eval.devices must be a number of devices >= 1, or -1 for every GPU, got "
            f"'{wanted}': set e.g. eval.devices=4"
        )
    if wanted == 1:
        return []
    # The device the evaluation would train on here (rdd.eval.stacked.eval_device) says whether
    # the workers get GPUs: under trainer.accelerator gpu, or auto with a GPU present.
    gpus = torch.cuda.device_count() if eval_device(trainer_kwargs).type == "cuda" else 0
    count = (gpus or 1) if wanted == -1 else wanted
    if count == 1:
        return []
    if gpus and count > gpus:
        raise UserError(
            f"eval.devices={count} but only {gpus} GPU(s) are visible: set eval.devices={gpus} "
            "(or -1: every GPU)"
        )
    if eval_cfg.get("batched_nets"):
        raise UserError(
            "eval.batched_nets=true trains the networks together on one device, "
            f"eval.devices={wanted} one per device: choose one (e.g. eval.batched_nets=null)"
        )
    if gpus:
        return [{"accelerator": "gpu", "devices": [i]} for i in range(count)]
    return [{"accelerator": "cpu", "devices": 1} for _ in range(count)]


def train_in_parallel(jobs: list[Job], devices: list[dict[str, Any]]) -> Iterator[EvalNetModule]:
    """Train every job in the workers (one per device); yield the trained modules, on the CPU,
    in job order as they become available."""
    threads = max(1, torch.get_num_threads() // len(devices))
    context = multiprocessing.get_context("spawn")
    slots = context.SimpleQueue()
    for device in devices:
        slots.put(device)
    pool = context.Pool(len(devices), initializer=_start_worker, initargs=(slots, threads))
    try:
        for job, state in zip(jobs, pool.imap(_train, jobs), strict=True):
            yield trained_module(job, state)
        pool.close()
    finally:
        pool.terminate()  # also when the caller stops early (an error, Ctrl-C)
        pool.join()


def _start_worker(slots: Any, threads: int) -> None:
    """A worker's set-up: its own device, its share of the CPU threads, no Ctrl-C of its own,
    and no life after the main process's (rdd.parallel.lifeline)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _worker_device.update(slots.get())


def _train(job: Job) -> dict[str, torch.Tensor]:
    """Train one network on this worker's device; its weights (and buffers) on the CPU."""
    settings = job.trainer_kwargs | _worker_device
    module, _ = train_eval_net(
        job.make_net, job.images, job.labels, job.num_classes, job.eval_cfg, settings, job.seed,
        show_epochs=False,  # one bar per worker would interleave with the others
    )  # fmt: skip
    return {name: t.detach().cpu() for name, t in module.net.state_dict().items()}


def trained_module(job: Job, state: dict[str, torch.Tensor]) -> EvalNetModule:
    """An evaluation module holding the weights a worker trained (for scoring only)."""
    net = init_net(job.make_net, job.seed)
    net.load_state_dict(state)
    no_training = {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0, "decay_step": 1}
    return EvalNetModule(net, job.num_classes, **no_training, augment=None, seed=0)
