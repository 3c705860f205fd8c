"""Can the inverted subgroup be found another way? Anomaly scores and cross-class clusters.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/anomaly_scores.py \\
        <cifar10 root> [--transforms invert blur grayscale] [--threads 1] \\
        > benchmarks/subgroup_shift/anomaly_scores.txt

discovery.md shows per-class k-means finding blur and grayscale (style statistics) but not
invert in any space. Two families of detectors that are not made for one transform, each
scored against ``data.subgroup``'s mask (5% of every class altered):

- **Anomaly scores, per class tail**: the top q (5%, 10%) of a class's training images by a
  score taken as the rare group; purity (altered share of the tail), recall (share of the
  class's altered images in it) and the AUC of the score, means over classes.
  ``rotation net``: a ConvNet-3 w32 trained to tell which of four rotations an image shows
  (self-supervised, as rotation-prediction anomaly detection), 15,000 training images,
  2 epochs; the score is its mean cross-entropy over the four rotations. ``ERM loss n ep``:
  the cross-entropy of the true class under the classifier of discovery.py's ERM net after
  n epochs (the loss that JTT-style methods threshold).
- **Class-centred clusters across classes**: features minus their class mean, scaled to unit
  variance, k-means over all classes at once (FAISS, 5,000 pooled images, seed 0), so a
  subgroup shared by every class (as a transform is) can form one cluster. Purity/recall of
  the cluster holding most altered images, and its size as a share of the data.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discovery import SEED, conv_stats, load, train_erm  # noqa: E402
from invert_statistics import auc  # noqa: E402

from rdd.clustering import embed_in_batches  # noqa: E402
from rdd.clustering.features import style_statistics  # noqa: E402
from rdd.clustering.kmeans import faiss_kmeans  # noqa: E402
from rdd.clustering.nearest import nearest_synthetic  # noqa: E402
from rdd.nets import net_factory  # noqa: E402

TAILS = (0.05, 0.10)
CROSS_KS = (5, 10, 20)
ROTATION_IMAGES = 15_000
ROTATION_EPOCHS = 2


def tail_row(name: str, score: Tensor, labels: Tensor, altered: Tensor, classes: int) -> str:
    """Per-class top-q purity/recall and AUC of an anomaly score, means over classes."""
    cells, aucs = [], []
    for q in TAILS:
        purity, recall = [], []
        for c in range(classes):
            mine = labels == c
            size = max(1, round(q * int(mine.sum())))
            caught = int(altered[mine][score[mine].topk(size).indices].sum())
            purity.append(caught / size)
            recall.append(caught / max(1, int(altered[mine].sum())))
        cells.append(f"{np.mean(purity):.2f} / {np.mean(recall):.2f}")
    # invert_statistics.auc(a, b) is P(a > b): here P(altered scores above unaltered).
    aucs = [
        auc(score[mine][altered[mine]], score[mine][~altered[mine]])
        for mine in (labels == c for c in range(classes))
    ]
    return f"| {name} | {np.mean(aucs):.3f} | " + " | ".join(cells) + " |"


def rotate(x: Tensor, k: int) -> Tensor:
    return torch.rot90(x, k, (2, 3))


def train_rotation_net(data, cfg) -> nn.Module:
    """ConvNet-3 w32 with a 4-way head, trained to name the rotation of an image."""
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    net = net_factory(cfg.net, data)()
    net.classifier = nn.Linear(net.classifier.in_features, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    subset = torch.randperm(len(data.train_y), generator=generator)[:ROTATION_IMAGES]
    net.train()
    for _ in range(ROTATION_EPOCHS):
        for batch in subset[torch.randperm(len(subset), generator=generator)].split(128):
            x = data.train_x[batch]
            inputs = torch.cat([rotate(x, k) for k in range(4)])
            targets = torch.arange(4).repeat_interleave(len(batch))
            loss = F.cross_entropy(net(inputs), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def rotation_score(net: nn.Module, images: Tensor) -> Tensor:
    chunks = []
    for x in images.split(1024):
        losses = [
            F.cross_entropy(net(rotate(x, k)), torch.full((len(x),), k), reduction="none")
            for k in range(4)
        ]
        chunks.append(torch.stack(losses).mean(0))
    return torch.cat(chunks)


@torch.no_grad()
def loss_score(net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    return torch.cat(
        [
            F.cross_entropy(net(x), y, reduction="none")
            for x, y in zip(images.split(1024), labels.split(1024), strict=True)
        ]
    )


def cross_class_rows(name: str, features: Tensor, labels: Tensor, altered: Tensor) -> list[str]:
    """k-means over all classes of class-centred, unit-variance features."""
    centred = features.float().clone()
    for c in labels.unique():
        centred[labels == c] -= centred[labels == c].mean(0)
    centred = (centred / centred.std(0).clamp_min(1e-8)).numpy().astype(np.float32)
    pool = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))[:5000]
    rows = []
    for k in CROSS_KS:
        # Fitted on the pool (FAISS trains on 256 points per centroid, as faiss.Kmeans does),
        # then every image joins its nearest centroid (one "class": all images, all centroids).
        centroids, _ = faiss_kmeans(
            torch.from_numpy(centred[pool.numpy()]),
            k,
            SEED,
            niter=25,
            nredo=3,
            max_points_per_centroid=256,
        )
        everyone, one_per_centroid = (
            torch.zeros(len(centred), dtype=torch.int64),
            torch.zeros(k, dtype=torch.int64),
        )
        assigned = nearest_synthetic(
            torch.from_numpy(centred), everyone, centroids, one_per_centroid
        )
        caught = torch.bincount(assigned[altered], minlength=k)
        best = int(caught.argmax())
        size = int((assigned == best).sum())
        rows.append(
            f"| {name} | {k} | {int(caught[best]) / size:.2f} | "
            f"{int(caught[best]) / int(altered.sum()):.2f} | {size / len(labels):.3f} |"
        )
    return rows


def one_transform(root: str, transform: str) -> None:
    data, cfg = load(root, transform)
    x, y, altered, classes = data.train_x, data.train_y, data.train_subgroup, data.num_classes
    print(f"\n## {transform}\n\n| anomaly score | AUC | top 5%: purity / recall | top 10% |")
    print("|---|---|---|---|")
    start = time.process_time()
    rotation = rotation_score(train_rotation_net(data, cfg), x)
    print(tail_row("rotation net", rotation, y, altered, classes))
    erm = train_erm(data, cfg, [1, 3])
    for epochs, net in erm.items():
        print(tail_row(f"ERM loss {epochs} ep", loss_score(net, x, y), y, altered, classes))
    print(f"\n(anomaly scores: {time.process_time() - start:.0f} CPU s)\n")
    print("| class-centred features | k | purity | recall | cluster size |\n|---|---|---|---|---|")
    torch.manual_seed(SEED)
    random_net = net_factory(cfg.net, data)()
    spaces = {
        "style statistics": style_statistics(x),
        "conv stats (random 3x3 conv)": conv_stats(x),
        "embedding (random net)": embed_in_batches(random_net, x),
        **{f"embedding (ERM {e} ep)": embed_in_batches(net, x) for e, net in erm.items()},
    }
    for name, features in spaces.items():
        print("\n".join(cross_class_rows(name, features, y, altered)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--transforms", nargs="+", default=["invert", "blur", "grayscale"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    wall = time.time()
    # The command without the data root: no path of the machine that ran it.
    print(
        f"# anomaly_scores.py <cifar10 root> --transforms {' '.join(args.transforms)} "
        f"--threads {args.threads}\n"
    )
    print(f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s).")
    for transform in args.transforms:
        one_transform(args.root, transform)
    load_after = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"\nLoad average before {load_before}, after {load_after}; {time.time() - wall:.0f} s wall."
    )


if __name__ == "__main__":
    main()
