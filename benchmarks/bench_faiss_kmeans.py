"""FAISS k-means time for subgroup discovery at CIFAR-10 scale.

50,000 x 2,048 float32 features (10 classes x 5,000, e.g. ResNet-18 penultimate features),
k clusters per class with `rdd.clustering.per_class_kmeans` (niter 20, nredo 1, as in
conf/clustering/faiss_kmeans.yaml). Features are random normal: the cost does not depend on
their values.

    python benchmarks/bench_faiss_kmeans.py [--k 10] [--dim 2048] [--per-class 5000]
"""

from __future__ import annotations

import argparse
import time

import faiss
import torch

from rdd.clustering import per_class_kmeans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--per-class", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(args.classes * args.per_class, args.dim, generator=gen)
    labels = torch.arange(args.classes).repeat_interleave(args.per_class)
    start = time.perf_counter()
    _, groups = per_class_kmeans(features, labels, args.classes, args.k, seed=0)
    seconds = time.perf_counter() - start
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads")
    print(
        f"{len(features)} x {args.dim} float32, {args.classes} classes, k={args.k} per class: {seconds:.1f} s"
    )
    print(f"groups used: {int(groups.unique().numel())} of {args.classes * args.k}")


if __name__ == "__main__":
    main()
