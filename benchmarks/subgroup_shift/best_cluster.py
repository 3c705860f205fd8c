"""How many altered starts per class the best pick among the default fit's clusters could give.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/best_cluster.py \\
        <cifar10 root> > benchmarks/subgroup_shift/best_cluster.txt

For CIFAR-10 with 5 % of every class altered (grayscale, invert, blur), the default clusterer's
k = 5 clusters per class (``style_error``, fitted on the run's pool of 256 per class, every
training image assigned, before ``shape`` merges anything) are scored against the true groups.
A represented image starts from a member of its group drawn at random, so the altered share
of the group it stands for is the altered start it gives its class. Printed per seed, as a
mean over classes: the altered start of the cluster a pick would need to choose (the purest
one, among those a bound ``rare_below`` lets represent, i.e. share x IPC below it; no bound:
any cluster), against 1.0 with the true groups; and in how many classes the altered images
are found (one cluster at >= 50 % purity holds >= 80 % of them), partly found (the clusters
at >= 50 % purity hold fewer), or unseparated (no cluster reaches 50 % purity).
Section 19 of this folder's README.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape import load  # noqa: E402
from start_purity import default_fit, root_and_seeds  # noqa: E402

IPC = 10
BOUNDS = (1.0, 1.5, float("inf"))
PURE = 0.5  # a cluster "of" the altered images: at least half of it altered
FOUND = 0.8  # ... holding at least this share of them


def cluster_table(data, seed: int) -> list[torch.Tensor]:
    """Per class, a (k, 3) float64 table of its clusters: share of the class, altered
    purity, altered recall (every training image assigned to the default fit's clusters)."""
    clusterer = default_fit(data, seed, shape="clusters")
    clusters = clusterer.assign(data.train_x, data.train_y)
    altered = data.train_subgroup.bool()
    tables = []
    for c in range(data.num_classes):
        mine = data.train_y == c
        local = clusters[mine] - c * clusterer.k
        sizes = torch.bincount(local, minlength=clusterer.k).double()
        hits = torch.bincount(local[altered[mine]], minlength=clusterer.k).double()
        purity = hits / sizes.clamp_min(1)
        recall = hits / hits.sum().clamp_min(1)
        tables.append(torch.stack([sizes / sizes.sum(), purity, recall], dim=1))
    return tables


def best_start(table: torch.Tensor, bound: float) -> float:
    """The altered start of the purest cluster that ``bound`` lets represent (0 if none)."""
    share, purity = table[:, 0], table[:, 1]
    allowed = (share * IPC < bound) & (share > 0)
    return float(purity[allowed].max()) if bool(allowed.any()) else 0.0


def outcome(table: torch.Tensor) -> str:
    """found | partly | unseparated: what the fit made of a class's altered images."""
    _, purity, recall = table.unbind(dim=1)
    pure = purity >= PURE
    if not bool(pure.any()):
        return "unseparated"
    return "found" if float(recall[pure].max()) >= FOUND else "partly"


OUTCOMES = ("found", "partly", "unseparated")


def summary(tables: list[torch.Tensor]) -> tuple[list[float], dict[str, int]]:
    """(mean best start per class for each of BOUNDS, classes per outcome)."""
    starts = [sum(best_start(t, b) for t in tables) / len(tables) for b in BOUNDS]
    counts = {name: 0 for name in OUTCOMES}
    for table in tables:
        counts[outcome(table)] += 1
    return starts, counts


def main() -> None:
    args = root_and_seeds(__doc__.splitlines()[0])
    start = time.process_time()
    print(f"# torch {torch.__version__}; best altered start per class by bound; classes by outcome")
    bounds = " ".join(f"best/{b:<4g}" for b in BOUNDS)
    print(f"transform seed {bounds} " + " ".join(f"{name:>11s}" for name in OUTCOMES))
    for transform in ("grayscale", "invert", "blur"):
        data = load(args.root, transform)
        for seed in args.seeds:
            starts, counts = summary(cluster_table(data, seed))
            cells = " ".join(f"{s:9.2f}" for s in starts)
            tallies = " ".join(f"{counts[name]:11d}" for name in OUTCOMES)
            print(f"{transform:9s} {seed:4d} {cells} {tallies}", flush=True)
    print(f"# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
