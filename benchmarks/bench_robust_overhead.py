"""Time per DSA outer iteration with and without the robust layer, on CIFAR-10-shaped data.

Both runs use the same seed and setting: ConvNet-3 w128, 10 classes of 3x32x32 random images
(256 per class), DSA, the published loops for the IPC. The robust run adds `risk=cvar`
(alpha 0.8) on matching over `faiss_kmeans` subgroups (k=3 per class, embedding features,
re-clustered at iteration 0 and every 50 iterations); its clustering time is reported
separately and amortised over 50 iterations.

    python benchmarks/bench_robust_overhead.py [--ipc 1] [--iterations 3]
"""

from __future__ import annotations

import argparse

import torch
from common import cifar_shaped, plain_learner, time_steps

from rdd.clustering import KMeansClusterer
from rdd.matching.gradient import GradientMatching
from rdd.risk import CVaR


def time_iterations(robust: bool, ipc: int, iterations: int) -> tuple[float, float]:
    """(mean seconds per iteration after the first, seconds of the first iteration)."""
    real_x, real_y = cifar_shaped(256)
    matcher = GradientMatching(iterations=iterations, dsa=True)
    learner = plain_learner(
        matcher,
        real_x[::256].repeat_interleave(ipc, 0),
        real_x,
        real_y,
        ipc,
        risk=CVaR(alpha=0.8, on=["matching"]) if robust else None,
        clusterer=KMeansClusterer(k=3, every=50, pool_per_class=256) if robust else None,
    )
    times = time_steps(matcher, learner, iterations)
    return sum(times[1:]) / len(times[1:]), times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    base, base_first = time_iterations(False, args.ipc, args.iterations)
    robust, robust_first = time_iterations(True, args.ipc, args.iterations)
    clustering = robust_first - base_first  # iteration 0 also clusters
    amortised = robust + clustering / 50
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, IPC {args.ipc}")
    print(f"DSA, risk=none:  {base:.2f} s per iteration")
    print(f"DSA, risk=cvar:  {robust:.2f} s per iteration (+{100 * (robust / base - 1):.0f}%)")
    print(
        f"clustering at iteration 0: about {clustering:.1f} s; amortised over 50 iterations: "
        f"{amortised:.2f} s per iteration (+{100 * (amortised / base - 1):.0f}%)"
    )


if __name__ == "__main__":
    main()
