"""Evaluation of a CIFAR-10-shaped IPC 10 set: networks one by one, stacked, or spread over
worker processes (issue 17, ``eval.devices``).

The default protocol (eval defaults: SGD, DSA, batch 256) on 100 random 3x32x32 images with
ConvNet-3 w128; val and test sets of random images (timing does not depend on pixel values)
and the three fixed shifted sets. The two modes run interleaved, alternating which goes first,
and each repeat checks that they give the same figures.

    .venv/bin/python benchmarks/bench_eval_speed.py                  # the default: 1000 epochs
    .venv/bin/python benchmarks/bench_eval_speed.py --epochs 50 --test-size 2000 --val-size 1000
    .venv/bin/python benchmarks/bench_eval_speed.py --device cuda --epochs 300 --repeats 2
    .venv/bin/python benchmarks/bench_eval_speed.py --modes sequential,workers2 --epochs 5   # 2 CPU processes

Modes: ``sequential`` (eval.batched_nets=false), ``stacked`` (true), ``workersN``
(eval.devices=N: N worker processes, each with 1/N of this process's CPU threads, or N GPUs).

On a GPU it also prints each mode's peak GPU memory (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch
from common import NUM_CLASSES, SHAPE, add_device_argument, cifar_shaped, machine, resolve_device
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from rdd.config.schemas import EvalSchema
from rdd.eval.scoring import evaluate_synset
from rdd.nets import build_net, load_net_config

SHIFTS = ("noise", "blur", "invert")


class RandomData:
    """What evaluate_synset reads of a RealDataModule: val/test loaders, test labels."""

    def __init__(self, val_size: int, test_size: int) -> None:
        gen = torch.Generator().manual_seed(1)
        self.num_classes = NUM_CLASSES
        self.val = torch.randn(val_size, *SHAPE, generator=gen), self.labels(val_size)
        self.test = torch.randn(test_size, *SHAPE, generator=gen), self.labels(test_size)
        self.test_y = self.test[1]

    @staticmethod
    def labels(n: int) -> torch.Tensor:
        return torch.arange(n) % NUM_CLASSES

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.val), batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(*self.test), batch_size=256)

    def shifted(self):
        gen = torch.Generator().manual_seed(2)
        for name in SHIFTS:  # stand-ins of the cached shifted copies: same size, same cost
            yield name, torch.randn(self.test[0].shape, generator=gen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--num-nets", type=int, default=5)
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="sequential,stacked", type=lambda s: s.split(","))
    add_device_argument(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)

    images, labels = cifar_shaped(10)
    data = RandomData(args.val_size, args.test_size)
    net_cfg = load_net_config("convnet")
    # A partial, not a lambda: the workersN modes send the factory to spawned processes.
    nets = {"convnet": partial(build_net, net_cfg, SHAPE[0], NUM_CLASSES, tuple(SHAPE[1:]))}
    base = OmegaConf.merge(
        OmegaConf.structured(EvalSchema),
        {"epochs": args.epochs, "num_nets": args.num_nets},
        {"dsa_strategy": "color_crop_cutout_flip_scale_rotate"},
    )
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    if device.type == "cuda":
        trainer |= {"accelerator": "gpu", "devices": [device.index or 0]}
    modes = args.modes
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    gaps = []
    print(machine(), f"| load average before: {os.getloadavg()}")
    for repeat in range(args.repeats):
        order = modes if repeat % 2 == 0 else modes[::-1]
        figures = {}
        for mode in order:
            settings = OmegaConf.merge(base, mode_settings(mode))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            figures[mode] = evaluate_synset(
                images, labels, data, nets, settings, trainer, seed=0, shifted=data.shifted
            )
            times[mode].append(time.perf_counter() - start)
            peak = ""
            if device.type == "cuda":
                peak = (
                    f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
                )
            print(f"repeat {repeat} {mode}: {times[mode][-1]:.1f} s{peak}", flush=True)
        first = figures[modes[0]]
        gaps.append(max(abs(figures[m][k] - v) for m in modes for k, v in first.items()))
    print(
        f"epochs {args.epochs}, {args.num_nets} nets, val {args.val_size}, test {args.test_size}, {device}"
    )
    medians = {mode: statistics.median(times[mode]) for mode in modes}
    base_mode = modes[0]
    for mode in modes:
        ratio = medians[base_mode] / medians[mode]
        print(f"median {mode} {medians[mode]:.1f} s, speed-up over {base_mode} {ratio:.2f}x")
    print(f"largest |difference| of any figure between the modes, per repeat: {gaps}")
    print(f"load average after: {os.getloadavg()}")


def mode_settings(mode: str) -> dict:
    """The eval keys of a mode: sequential, stacked or workersN."""
    if mode == "sequential":
        return {"batched_nets": False, "devices": 1}
    if mode == "stacked":
        return {"batched_nets": True, "devices": 1}
    if mode.startswith("workers"):
        return {"batched_nets": None, "devices": int(mode.removeprefix("workers"))}
    raise SystemExit(f"unknown mode '{mode}': sequential, stacked or workersN")


if __name__ == "__main__":
    main()
