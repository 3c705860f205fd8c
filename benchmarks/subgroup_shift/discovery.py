"""Does per-class k-means find the rare subgroup without labels? Purity and recall per space.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/discovery.py \\
        <cifar10 root> [--out FILE] [--transforms grayscale invert blur] [--epochs 1 2]

For every ``data.subgroup`` transform (5% of every class altered) and every candidate feature
space, k-means is fitted per class as a run fits it (``KMeansClusterer``, pool of 256 per
class, seed 0, iteration 0) and every training image is assigned. Scored per class, then
averaged (``rdd.clustering.rare_group_discovery``): purity, the share of altered images in the
cluster that holds most of the class's altered images, and recall, the share of the class's
altered images in it. Candidates:

- ``embedding (random net)``: a seeded, untrained ConvNet-3 w32 (the matching net at the start);
- ``pixels``;
- ``style``: ``clustering.features=style`` itself (rdd.clustering.features.style_statistics,
  median/MAD scaling); ``style, z-score``: the same statistics scaled by mean and std;
  ``conv stats``: channel mean and std of a fixed random 3x3 conv layer + ReLU (AdaIN-style),
  median/MAD scaled;
- ``ERM n ep``: the embedding of that ConvNet trained n epochs on the data (plain SGD, as
  benchmarks/subgroup_shift/feature_net.py), and ``JTT n ep``: its error set (per class,
  wrongly vs rightly classified training images; scored on the wrongly classified group).

A precomputed feature table goes through the same ``KMeansClusterer`` as (N, D, 1, 1) images
with ``features=pixels``, which uses them as they are. Seconds are CPU seconds of this
process (one thread: ``OMP_NUM_THREADS=1``): computing the features of all training images
(and training the net), then fitting and assigning.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rdd.clustering import KMeansClusterer, embed_in_batches, rare_group_discovery, robust_scaling
from rdd.clustering.discovery import class_rare_group
from rdd.clustering.features import style_statistics
from rdd.config.compose import build
from rdd.nets import net_factory

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import compose_config  # noqa: E402

KS = (2, 3, 5)
SEED = 0


def load(root: str, transform: str):
    """The CIFAR-10 data module with ``data.subgroup=transform``, set up, and the net config."""
    overrides = ["data=cifar10", f"data.root={root}", f"data.subgroup={transform}"]
    cfg = compose_config(*overrides, "net=convnet_w32", output_dir=Path("/tmp/rdd-discovery"))
    data = build(cfg.data, "data")
    data.setup()
    return data, cfg


def timed(fn: Callable, *args):
    start = time.process_time()
    result = fn(*args)
    return result, time.process_time() - start


def scores(groups: Tensor, data, k: int) -> tuple[dict[str, float], list[tuple[float, float]]]:
    """Mean purity/recall and the per-class (purity, recall) of a grouping of all images."""
    labels, altered = data.train_y, data.train_subgroup
    mean = rare_group_discovery(groups, labels, altered, k, data.num_classes)
    per_class = [
        class_rare_group(groups[labels == c] - c * k, altered[labels == c], k)
        for c in range(data.num_classes)
    ]
    return mean, per_class


def cluster_table(features: Tensor, data, k: int) -> Tensor:
    """Groups of all images: KMeansClusterer fitted on the pool of a precomputed table."""
    clusterer = KMeansClusterer(k=k, features="pixels", seed=SEED)
    images = features.reshape(*features.shape, 1, 1)
    pool = clusterer.pool(data.train_y, data.num_classes)
    clusterer.fit(images[pool], data.train_y[pool], data.num_classes)
    return clusterer.assign(images, data.train_y)


def cluster_style(data, k: int) -> Tensor:
    """Groups of all images with ``clustering.features=style``, exactly as a run computes them."""
    clusterer = KMeansClusterer(k=k, features="style", seed=SEED)
    pool = clusterer.pool(data.train_y, data.num_classes)
    clusterer.fit(data.train_x[pool], data.train_y[pool], data.num_classes)
    return clusterer.assign(data.train_x, data.train_y)


def scaled(features: Tensor, data, robust: bool) -> Tensor:
    """Features standardised on the k-means pool: median/MAD, or mean/std (z-score)."""
    pool = KMeansClusterer(k=1, features="pixels", seed=SEED).pool(data.train_y, data.num_classes)
    if robust:
        centre, scale = robust_scaling(features[pool])
    else:
        centre, scale = features[pool].mean(0), features[pool].std(0).clamp_min(1e-12)
    return (features - centre) / scale


@torch.no_grad()
def conv_stats(images: Tensor, width: int = 32) -> Tensor:
    """Channel mean and std of a seeded random 3x3 conv + ReLU (AdaIN-style style): (N, 2w)."""
    generator = torch.Generator().manual_seed(SEED)
    weight = torch.randn(width, images.shape[1], 3, 3, generator=generator)
    weight /= (images.shape[1] * 9) ** 0.5
    chunks = []
    for batch in images.split(1024):
        act = F.relu(F.conv2d(batch, weight, padding=1)).flatten(2)
        chunks.append(torch.cat([act.mean(2), act.std(2)], 1))
    return torch.cat(chunks)


def train_erm(data, cfg, epochs: list[int]) -> dict[int, torch.nn.Module]:
    """The ConvNet trained with SGD (as feature_net.py), a frozen copy after each epoch asked."""
    import copy

    torch.manual_seed(SEED)
    net = net_factory(cfg.net, data)()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(SEED)
    snapshots = {}
    for epoch in range(1, max(epochs) + 1):
        net.train()
        for batch in torch.randperm(len(data.train_y), generator=generator).split(256):
            loss = F.cross_entropy(net(data.train_x[batch]), data.train_y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in epochs:
            snapshots[epoch] = copy.deepcopy(net).eval()
    return snapshots


@torch.no_grad()
def predictions(net: torch.nn.Module, images: Tensor) -> Tensor:
    return torch.cat([net(batch).argmax(1) for batch in images.split(1024)])


def jtt_row(net, data) -> tuple[dict[str, float], list[tuple[float, float]], float]:
    """Purity/recall of the error set (per class), and the error rate, of an ERM net."""
    wrong = predictions(net, data.train_x) != data.train_y
    altered, labels = data.train_subgroup, data.train_y
    per_class = []
    for c in range(data.num_classes):
        mine = labels == c
        caught = float((wrong & altered & mine).sum())
        per_class.append(
            (caught / max(float((wrong & mine).sum()), 1), caught / float((altered & mine).sum()))
        )
    purity = sum(p for p, _ in per_class) / len(per_class)
    recall = sum(r for _, r in per_class) / len(per_class)
    mean = {"cluster/rare_purity": purity, "cluster/rare_recall": recall}
    return mean, per_class, float(wrong.float().mean())


def table_rows(name: str, features: Tensor, data, feature_s: float) -> list[dict]:
    """One row per k for a precomputed feature table."""
    rows = []
    for k in KS:
        groups, cluster_s = timed(cluster_table, features, data, k)
        mean, per_class = scores(groups, data, k)
        rows.append(
            dict(
                name=name,
                k=k,
                mean=mean,
                per_class=per_class,
                feature_s=feature_s,
                cluster_s=cluster_s,
            )
        )
    return rows


def candidates(data, cfg, epochs: list[int]) -> list[dict]:
    """Every candidate's rows for one transform, printed as they come."""
    rows: list[dict] = []

    def add(new: list[dict]) -> None:
        for row in new:
            print(format_row(data.subgroup.transform, row), flush=True)
        rows.extend(new)

    torch.manual_seed(SEED)
    random_net = net_factory(cfg.net, data)()
    features, seconds = timed(embed_in_batches, random_net, data.train_x)
    add(table_rows("embedding (random net)", features, data, seconds))
    add(table_rows("pixels", data.train_x.flatten(1), data, 0.0))
    raw, style_s = timed(style_statistics, data.train_x)
    style_rows = []
    for k in KS:
        groups, seconds = timed(cluster_style, data, k)
        mean, per_class = scores(groups, data, k)
        # cluster_s includes the statistics of the pool and of every image (the run's cost).
        style_rows.append(
            dict(
                name="style",
                k=k,
                mean=mean,
                per_class=per_class,
                feature_s=style_s,
                cluster_s=seconds,
            )
        )
    add(style_rows)
    add(table_rows("style, z-score", scaled(raw, data, robust=False), data, style_s))
    features, seconds = timed(conv_stats, data.train_x)
    add(table_rows("conv stats", scaled(features, data, robust=True), data, seconds))
    snapshots, train_s = timed(train_erm, data, cfg, epochs)
    for epoch, net in snapshots.items():
        features, seconds = timed(embed_in_batches, net, data.train_x)
        cost = train_s * epoch / max(epochs) + seconds
        add(table_rows(f"ERM {epoch} ep", features, data, cost))
        (mean, per_class, error), seconds = timed(jtt_row, net, data)
        add(
            [
                dict(
                    name=f"JTT {epoch} ep (error {100 * error:.0f}%)",
                    k=2,
                    mean=mean,
                    per_class=per_class,
                    feature_s=train_s * epoch / max(epochs),
                    cluster_s=seconds,
                )
            ]
        )
    return rows


def format_row(transform: str, row: dict) -> str:
    mean = row["mean"]
    return (
        f"| {transform} | {row['name']} | {row['k']} | {mean['cluster/rare_purity']:.2f} | "
        f"{mean['cluster/rare_recall']:.2f} | {row['feature_s']:.0f} | {row['cluster_s']:.0f} |"
    )


def per_class_line(transform: str, row: dict) -> str:
    purity = " ".join(f"{p:.2f}" for p, _ in row["per_class"])
    recall = " ".join(f"{r:.2f}" for _, r in row["per_class"])
    return f"| {transform} | {row['name']} | {row['k']} | {purity} | {recall} |"


def report(results: dict[str, list[dict]], header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| transform | candidate | k | purity | recall | features CPU s | cluster CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for transform, rows in results.items():
        lines += [format_row(transform, row) for row in rows]
    lines += [
        "",
        "Per class (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck):",
        "",
        "| transform | candidate | k | purity per class | recall per class |",
        "|---|---|---|---|---|",
    ]
    for transform, rows in results.items():
        lines += [per_class_line(transform, row) for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--transforms", nargs="+", default=["grayscale", "invert", "blur"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    start = time.time()
    load_start = os.getloadavg()
    results = {}
    for transform in args.transforms:
        data, cfg = load(args.root, transform)
        results[transform] = candidates(data, cfg, args.epochs)
    header = [
        "    "
        + shlex.join(
            [f"{name}={os.environ.get(name, '')}" for name in ("OMP_NUM_THREADS", "PYTHONPATH")]
            + [sys.executable, *sys.argv]
        ),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} on {torch.get_num_threads()} thread(s), no GPU used. "
        f"Load average (1, 5, 15 min) at the start {load_start[0]:.1f} {load_start[1]:.1f} "
        f"{load_start[2]:.1f}, at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"{(time.time() - start) / 60:.0f} min wall.",
    ]
    text = report(results, header)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
