"""Can a low-level statistic tell an inverted image from an upright one? (issue 24)

Inversion (x -> 1 - x) flips the sign of every statistic below, so if natural images had a
consistent sign, the statistic would find the inverted subgroup without labels. For 300
random training images per class (seed 0) and their inversions, the AUC of each statistic
(0.5: no separation; 0 or 1: perfect). Pixels in [0, 1], luminance the mean over RGB.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/invert_statistics.py \
        ../shared/data/cifar10-jpeg > benchmarks/subgroup_shift/invert_statistics.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)


def load(root: Path, per_class: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = []
    for folder in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        for f in rng.choice(files, per_class, replace=False):
            images.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255)
    return torch.tensor(np.stack(images)).permute(0, 3, 1, 2)


def skew(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(1, keepdim=True)
    return (centred**3).mean(1) / centred.pow(2).mean(1).clamp_min(1e-10) ** 1.5


def corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).mean(1) / (a.pow(2).mean(1).sqrt() * b.pow(2).mean(1).sqrt()).clamp_min(1e-8)


def statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    luma = x.mean(1)
    flat = luma.flatten(1)
    laplacian = torch.nn.functional.conv2d(luma.unsqueeze(1), LAPLACIAN).flatten(1)
    dx, dy = luma[:, :, 1:] - luma[:, :, :-1], luma[:, 1:, :] - luma[:, :-1, :]
    gradient = (dx[:, :-1, :] ** 2 + dy[:, :, :-1] ** 2).sqrt().flatten(1)
    chroma = (x - x.mean((2, 3), keepdim=True)).std(1).flatten(1)
    half = x.shape[2] // 2
    return {
        "luminance skew": skew(flat),
        "Laplacian skew": skew(laplacian),
        "corr(luminance, gradient)": corr(luma[:, :-1, :-1].flatten(1), gradient),
        "corr(luminance, chroma)": corr(flat, chroma),
        "top - bottom luminance": luma[:, :half].mean((1, 2)) - luma[:, half:].mean((1, 2)),
        "median - mean luminance": flat.median(1).values - flat.mean(1),
    }


def auc(upright: torch.Tensor, inverted: torch.Tensor) -> float:
    """P(upright > inverted), by ranks."""
    values = torch.cat([upright, inverted]).numpy()
    ranks = values.argsort().argsort() + 1
    n, m = len(upright), len(inverted)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="CIFAR-10 root with train/<class>/ JPEGs")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x = load(args.root, args.per_class, args.seed)
    upright, inverted = statistics(x), statistics(1 - x)
    print(f"{len(x)} images ({args.per_class} per class, seed {args.seed}) and their inversions")
    print("| statistic | AUC upright vs inverted | mean upright | mean inverted |")
    print("| --- | --- | --- | --- |")
    for name in upright:
        a, b = upright[name], inverted[name]
        print(f"| {name} | {auc(a, b):.3f} | {a.mean():.3f} | {b.mean():.3f} |")


if __name__ == "__main__":
    main()
