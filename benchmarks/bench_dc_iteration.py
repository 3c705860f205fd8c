"""Wall time per DC outer iteration and peak memory on CIFAR-10-shaped data.

Setting (DESIGN.md's published CIFAR-10 defaults): ConvNet-3 width 128 (instance norm, avg
pool), IPC 10, 10 classes, 3x32x32 images, 256 real images per class per matching step,
(outer_loop, inner_loop) = (10, 50). The real data are 2,560 random images (256 per class):
timing does not depend on pixel values. Runs the learner's matcher directly, outside Lightning,
so the figure is the algorithm's cost.

    python benchmarks/bench_dc_iteration.py [--iterations 2] [--ipc 10] [--threads N] [--device cuda]

Peak memory is the process's peak resident set size (ru_maxrss) after the run, and the
increase over the peak before the first iteration; on a GPU, torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse

import torch
from common import (
    add_device_argument,
    cifar_shaped,
    machine,
    memory_name,
    peak_mib,
    plain_learner,
    resolve_device,
    time_steps,
)

from rdd.matching.gradient import GradientMatching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dsa", action="store_true")
    parser.add_argument("--outer-loop", type=int, default=None, help="default: published table")
    parser.add_argument("--inner-loop", type=int, default=None, help="default: published table")
    add_device_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    real_x, real_y = cifar_shaped(args.per_class)
    loops = {"outer_loop": args.outer_loop, "inner_loop": args.inner_loop}
    matcher = GradientMatching(iterations=args.iterations, dsa=args.dsa, **loops)
    init = real_x[:: args.per_class].repeat_interleave(args.ipc, 0)
    learner = plain_learner(matcher, init, real_x, real_y, args.ipc).to(device)
    before = peak_mib(device)
    times = time_steps(matcher, learner, args.iterations)
    outer, inner = matcher.loops(args.ipc)
    print(machine())
    print(
        f"DC{' + DSA' if args.dsa else ''}, ConvNet-3 w128, IPC {args.ipc}, {args.per_class} real/class, loops ({outer}, {inner}), {device}"
    )
    print(
        f"seconds per outer iteration: {', '.join(f'{t:.1f}' for t in times)} (mean {sum(times) / len(times):.1f})"
    )
    print(
        f"{memory_name(device)}: {peak_mib(device):.0f} MiB (before the first iteration {before:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
