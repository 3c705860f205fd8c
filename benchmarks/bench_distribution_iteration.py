"""Wall time per DM / IDM iteration and peak memory on CIFAR-10-shaped data.

Setting (the published CIFAR-10 IPC 10 commands): ConvNet-3 width 128 (instance norm, avg
pool), IPC 10, 10 classes, 3x32x32 images, 256 real images per class per iteration, DSA.
IDM: 2x2 partition-and-expansion, CE weight 0.5, a queue of up to 100 networks of which 2 train
10 steps (batch 256) per iteration and 1 is sampled for matching, images stepped per class.
The real data are random (timing does not depend on pixel values); the learner's matcher runs
directly, outside Lightning, so the figure is the algorithm's cost.

    python benchmarks/bench_distribution_iteration.py --method idm [--iterations 6] [--ipc 10] [--device cuda]

Time: mean over the iterations after the first (which builds the queue). Peak memory: the
process's peak resident set size (ru_maxrss), and the peak before the first iteration; on a
GPU, torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse

import torch
from common import (
    NUM_CLASSES,
    add_device_argument,
    cifar_shaped,
    machine,
    memory_name,
    peak_mib,
    plain_learner,
    resolve_device,
    time_steps,
)

from rdd.distill.expansion import pack
from rdd.matching.distribution import DistributionMatching

SETTINGS = {
    "dm": {"name": "dm", "lr_img": 1.0},
    "idm": {
        "name": "idm",
        "lr_img": 0.2,
        "factor": 2,
        "ce_weight": 0.5,
        "step_per_class": True,
        "queue_size": 100,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(SETTINGS), default="dm")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    real_x, real_y = cifar_shaped(args.per_class)
    matcher = DistributionMatching(iterations=args.iterations, **SETTINGS[args.method])
    tiles = [real_x[: NUM_CLASSES * args.ipc] for _ in range(matcher.factor**2)]
    learner = plain_learner(matcher, pack(tiles, matcher.factor), real_x, real_y, args.ipc)
    learner = learner.to(device)
    before = peak_mib(device)
    times = time_steps(matcher, learner, args.iterations)
    steady = times[1:] or times
    print(machine())
    print(
        f"{args.method.upper()}, ConvNet-3 w128, IPC {args.ipc}, {args.per_class} real/class, DSA, {device}"
    )
    print(
        f"seconds per iteration: {', '.join(f'{t:.2f}' for t in times)} "
        f"(mean after the first {sum(steady) / len(steady):.2f})"
    )
    print(
        f"{memory_name(device)}: {peak_mib(device):.0f} MiB (before the first iteration {before:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
