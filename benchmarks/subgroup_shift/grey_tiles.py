"""How many grey images does a distilled set hold, and does that track the grayscale worst group?

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/grey_tiles.py \\
        <runs>/grayscale > benchmarks/subgroup_shift/grey_tiles.txt

A diagnostic, not a detector: it reads the ``synset.pt`` of every run folder
``<method>_<arm>_s<seed>[tag]`` under the given folder (``run.sh``'s layout for
``data.subgroup=grayscale``), expands IDM's packed images into their tiles (what evaluation
trains on), and counts the *grey* ones: chroma, the root mean square over pixels of a pixel's
channels minus their mean (in [0, 1] pixel units), below ``--threshold``. A real grayscale
image has chroma 0 and a colour CIFAR-10 image ~0.05 (median); ``--threshold`` 0.002 keeps only
images whose channels were never pulled apart. Each arm is paired by seed with the ``none`` run
of its own tag, or the untagged one (as ``collect.py`` pairs them), and the table gives the
change in grey images next to the change in worst-group accuracy; the last line is their
Pearson correlation over every pair. Section 9 of this folder's README.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect import NAME  # noqa: E402  (run.sh's folder names: method, arm, seed, tag)

from rdd.distill.expansion import expand  # noqa: E402
from rdd.outputs.files import read_metrics  # noqa: E402
from rdd.synset import SyntheticSet  # noqa: E402


def chroma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) pixels in [0, 1] -> (N,): the RMS distance of a pixel's channels from their
    mean, over the image."""
    return (images - images.mean(1, keepdim=True)).pow(2).mean((1, 2, 3)).sqrt()


def grey_count(run: Path, threshold: float) -> tuple[int, int]:
    """(grey images, images) of a run's set, IDM's tiles counted one by one."""
    synset = SyntheticSet.load(run / "synset.pt")
    tiles, _ = expand(synset.denormalized(), synset.labels, synset.factor)
    return int((chroma(tiles) < threshold).sum()), len(tiles)


def runs_of(folder: Path, threshold: float) -> list[dict]:
    found = []
    for run in sorted(p for p in folder.iterdir() if (p / "synset.pt").is_file()):
        match = NAME.match(run.name)
        if not match or not (run / "metrics.json").is_file():
            continue
        grey, total = grey_count(run, threshold)
        worst = read_metrics(run)["worst_group_acc"]  # percent
        found.append(match.groupdict() | {"grey": grey, "total": total, "worst": worst})
    return found


def base_of(found: list[dict], row: dict, bases: dict[str, str]) -> dict | None:
    """The ``none`` run an arm is paired with: same method and seed, its own tag's if there
    is one, else the first tag ``bases`` names for it that has one (``--base
    _step0=_g6,_represent``), else the untagged one."""
    for tag in [row["tag"], *bases.get(row["tag"], "").split(","), ""]:
        for other in found:
            same = (other["method"], other["seed"], other["tag"]) == (
                row["method"],
                row["seed"],
                tag,
            )
            if same and other["arm"] == "none":
                return other
    return None


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.mean(xs), statistics.mean(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sx = sum((x - mx) ** 2 for x in xs) ** 0.5
    sy = sum((y - my) ** 2 for y in ys) ** 0.5
    return cov / (sx * sy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="run.sh's <out>/grayscale")
    parser.add_argument("--threshold", type=float, default=0.002)
    parser.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="TAG=NONE_TAG[,NONE_TAG...]",
        help="pair the arms of TAG with the none runs of the first NONE_TAG that has one "
        "(e.g. _represent=_rng)",
    )
    args = parser.parse_args()
    bases = dict(item.split("=", 1) for item in args.base)
    found = runs_of(args.folder, args.threshold)
    options = " ".join(f"--base {item}" for item in args.base)
    print(f"# grey_tiles.py {args.folder.name} --threshold {args.threshold} {options}\n")
    print("| method | arm | seed | images | grey | grey in `none` | Δ grey | Δ worst group |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    pairs = []
    for row in found:
        base = base_of(found, row, bases) if row["arm"] != "none" else None
        cells = [row["method"], row["arm"] + row["tag"], row["seed"], row["total"], row["grey"]]
        if base is None:
            print("| " + " | ".join(map(str, cells + ["-", "-", "-"])) + " |")
            continue
        d_grey, d_worst = row["grey"] - base["grey"], row["worst"] - base["worst"]
        pairs.append((row["method"], d_grey / row["total"], d_worst))
        cells += [base["grey"], f"{d_grey:+d}", f"{d_worst:+.2f}"]
        print("| " + " | ".join(map(str, cells)) + " |")
    print("\nPearson r between the change in the grey share of the set and the change in")
    print("worst-group accuracy, over the pairs above:")
    for method in sorted({m for m, _, _ in pairs}) + ["all"]:
        mine = [(s, w) for m, s, w in pairs if method in (m, "all")]
        if len(mine) > 2 and len({s for s, _ in mine}) > 1:
            share, worst = zip(*mine, strict=True)
            print(f"- {method}: r = {pearson(list(share), list(worst)):.2f} ({len(mine)} pairs)")


if __name__ == "__main__":
    main()
