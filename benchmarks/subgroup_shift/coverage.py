"""Does a method's worst-group gain track how many classes start with their rare group
represented?

    .venv/bin/python benchmarks/subgroup_shift/coverage.py <runs>/grayscale --method idm \\
        > benchmarks/subgroup_shift/coverage.txt

Reads every run folder ``<method>_<arm>_s<seed><tag>`` of the given transform folder
(``run.sh``'s layout) that logged an allocation: the represented images per class
(``alloc/represented_images``: real starts of groups the first, size-based allocation gave
images, kept in the shared pool) and the images the known rare group owns per class
(``alloc/rare_images``), both at the first revisit, and pairs its worst-group accuracy with
the untagged ``none`` of its method and seed in ``results.json`` (the ``none`` path is
stable across commits for IDM, section 15). Prints one line per run and the Pearson
correlation of represented images with the gain. Section 17 of this folder's README.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect import NAME  # noqa: E402  (run.sh's folder names: method, arm, seed, tag)

RESULTS = Path(__file__).resolve().parent / "results.json"


def first_allocation(folder: Path) -> tuple[float, float] | None:
    """(represented images, rare-owned images) per class at the run's first revisit."""
    path = folder / "csv" / "metrics.csv"
    if not path.exists():
        return None
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("alloc/represented_images"):
                return float(row["alloc/represented_images"]), float(row["alloc/rare_images"])
    return None


def base_accuracies(results: Path, transform: str, method: str) -> dict[int, float]:
    """Worst-group accuracy of the untagged ``none`` run of every seed."""
    rows = json.loads(results.read_text())
    return {
        r["seed"]: r["worst_group_acc"]
        for r in rows
        if (r.get("transform"), r["method"], r["risk"], r.get("design"))
        == (transform, method, "none", "owned")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="one transform's folder of run.sh's output")
    parser.add_argument("--method", default="idm")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    transform = args.runs.name
    base = base_accuracies(args.results, transform, args.method)
    print(f"# {transform}, {args.method}: per class at the first revisit; Δ worst vs none")
    print("run                              represented rare-owned  Δ worst")
    pairs = []
    for folder in sorted(p for p in args.runs.iterdir() if p.is_dir()):
        match = NAME.fullmatch(folder.name)
        if not match or match["method"] != args.method or match["arm"] == "none":
            continue
        allocation = first_allocation(folder)
        metrics = folder / "metrics.json"
        seed = int(match["seed"])
        if allocation is None or not metrics.exists() or seed not in base:
            continue
        scores = json.loads(metrics.read_text())
        gain = scores[f"{scores['headline_net']}/worst_group_acc"] - base[seed]
        pairs.append((allocation[0], gain))
        print(f"{folder.name:32s} {allocation[0]:11.1f} {allocation[1]:10.1f} {gain:+8.2f}")
    if len(pairs) > 2:
        represented, gains = zip(*pairs, strict=True)
        r = statistics.correlation(represented, gains)
        print(f"# Pearson r (represented, Δ worst) = {r:.2f} over {len(pairs)} runs")


if __name__ == "__main__":
    main()
