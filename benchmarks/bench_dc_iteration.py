"""Wall time per DC outer iteration and peak memory on CIFAR-10-shaped data.

Setting (DESIGN.md's published CIFAR-10 defaults): ConvNet-3 width 128 (instance norm, avg
pool), IPC 10, 10 classes, 3x32x32 images, 256 real images per class per matching step,
(outer_loop, inner_loop) = (10, 50). The real data are 2,560 random images (256 per class):
timing does not depend on pixel values. Runs the learner's matcher directly, outside Lightning,
so the figure is the algorithm's cost.

    python benchmarks/bench_dc_iteration.py [--iterations 2] [--ipc 10] [--threads N]

Peak memory is the process's peak resident set size (ru_maxrss) after the run, and the
increase over the peak before the first iteration.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from rdd.learner import SyntheticSetLearner
from rdd.matching.gradient import GradientMatching
from rdd.nets import build_net


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dsa", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    num_classes, shape = 10, (3, 32, 32)
    real_x = torch.randn(num_classes * args.per_class, *shape, generator=gen)
    real_y = torch.arange(num_classes).repeat_interleave(args.per_class)
    matcher = GradientMatching(iterations=args.iterations, dsa=args.dsa)
    learner = SyntheticSetLearner(
        matcher,
        lambda: build_net("convnet", shape[0], num_classes, shape[1:]),
        real_x[:: args.per_class].repeat_interleave(args.ipc, 0),
        real_x,
        real_y,
        num_classes,
        args.ipc,
        seed=0,
    )
    opt = torch.optim.SGD([learner.images], lr=matcher.lr_img, momentum=matcher.momentum_img)
    learner.image_step = lambda loss: (
        opt.zero_grad(),
        loss.backward(),
        opt.step(),
    )  # no Trainer here

    before = peak_rss_mib()
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        matcher.step(learner)
        times.append(time.perf_counter() - start)
    outer, inner = matcher.loops(args.ipc)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        f"DC{' + DSA' if args.dsa else ''}, ConvNet-3 w128, IPC {args.ipc}, {args.per_class} real/class, loops ({outer}, {inner})"
    )
    print(
        f"seconds per outer iteration: {', '.join(f'{t:.1f}' for t in times)} (mean {sum(times) / len(times):.1f})"
    )
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (before the first iteration {before:.0f} MiB)")


if __name__ == "__main__":
    main()
