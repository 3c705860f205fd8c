"""Collect the rare-subgroup benchmark's runs into results.json and a markdown table.

    .venv/bin/python benchmarks/subgroup_shift/collect.py benchmarks/subgroup_shift/runs_owned \
        [--out benchmarks/subgroup_shift]

Every run directory ``<method>_<arm>_s<seed>[tag]`` (at any depth) with a metrics.json and a
config.yaml gives one row ``{"design": "owned", "subgroup", "transform", "method", "risk",
"groups", "allocation", "seed", "test_acc", "worst_group_acc", "worst_cluster_acc", "altered_acc",
"rare_purity", "rare_recall", ...}`` (percent; ``groups``: ``known``, the clustering with its
feature space, or ``-`` for risk=none), read from the run's own config. Rows already in
results.json are kept (the class-wide design's, ``"design": "class-wide"``, and owned-design
rows whose run folders are gone) unless a run of the same arm replaces them: same transform,
method, risk (with its tag), groups and seed. The table shows mean ± std over seeds and each
arm's change against ``none`` (same subgroup, method and seed); an arm whose tag has a ``none``
run of its own (``TAG=_x ARMS="none discovered"``: both arms at one commit) is paired with that
one, and that ``none`` with the untagged one (how far ``none`` moved between the commits).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from rdd.outputs.files import read_metrics

NAME = re.compile(r"(?P<method>[a-z]+)_(?P<arm>[a-z_]+?)_s(?P<seed>\d+)(?P<tag>.*)$")
KEYS = ("test_acc", "worst_group_acc", "worst_cluster_acc", "altered_acc")
HEADERS = ("clean test", "worst group", "worst cluster", "altered test")


def rows(runs: Path) -> list[dict]:
    found = []
    for metrics in sorted(runs.glob("**/metrics.json")):
        match = NAME.match(metrics.parent.name)
        if not match or not (metrics.parent / "config.yaml").is_file():
            continue
        cfg = OmegaConf.load(metrics.parent / "config.yaml")
        values = read_metrics(metrics)
        if not values.get("eval_complete", True):
            continue  # an evaluation still running (metrics.json is rewritten as it goes)
        subgroup = cfg.data.subgroup  # a transform name, or {transform: ..., fraction: ...}
        transform = subgroup if isinstance(subgroup, str) else subgroup.transform
        row = {"design": "owned", "subgroup": transform, "transform": transform}
        row |= {"method": cfg.matching.name, "risk": cfg.risk.name + match["tag"]}
        row |= {"arm": match["arm"], "tag": match["tag"]}
        row |= {"groups": groups_of(cfg), "seed": int(cfg.seed)}
        row["allocation"] = allocation_of(cfg)
        values["altered_acc"] = values[f"group_{transform}_acc"]
        row |= {key: round(values[key], 2) for key in KEYS if key in values}
        for key in ("cluster_rare_purity", "cluster_rare_recall"):
            if key in values:
                row[key.removeprefix("cluster_")] = round(values[key], 1)
        row |= {key: round(values[key], 1) for key in ("distill_seconds", "eval_seconds")}
        row |= allocation_counts(metrics.parent)
        found.append(row)
    return found


def allocation_counts(run: Path) -> dict[str, float]:
    """The allocation a run logged first (images per class: ``shared_images``, and
    ``rare_images``, those owned by the group holding most of the rare subgroup), from its
    ``csv/metrics.csv``; empty when it logged none (risk=none)."""
    table = run / "csv" / "metrics.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        for line in csv.DictReader(handle):
            if line.get("alloc/shared_images"):
                return {
                    key: round(float(line[f"alloc/{key}"]), 2)
                    for key in ("shared_images", "rare_images")
                    if line.get(f"alloc/{key}")
                }
    return {}


def groups_of(cfg) -> str:
    """``known``, the clustering, its feature space and k (and ``clustering.rare_pick`` where
    it is not the smallest cluster), or ``-`` when no risk acts."""
    if cfg.risk.name == "none":
        return "-"
    if cfg.clustering.name == "known":
        return "known"
    name = (
        f"{cfg.clustering.name}:{cfg.clustering.get('features', '')}:k{cfg.clustering.get('k', '')}"
    )
    pick = cfg.clustering.get("rare_pick", "smallest")  # smallest: the rows before rare_pick
    return name if pick == "smallest" else f"{name}:{pick}"


def allocation_of(cfg) -> str:
    """``shared`` (robust.allocation.shared, the default since issue 24's second design),
    ``owned`` (every image owned by a group: the first design, and runs from before the key
    existed), or ``-`` when no risk acts."""
    if cfg.risk.name == "none":
        return "-"
    robust = cfg.get("robust") or {}
    return "shared" if (robust.get("allocation") or {}).get("shared", False) else "owned"


def earlier_rows(results: Path) -> list[dict]:
    """The rows already in results.json (rows from before the design key are the class-wide
    design's, issue 13), kept as they were measured."""
    if not results.is_file():
        return []
    return [{"design": "class-wide"} | r for r in json.loads(results.read_text())]


# Arms measured without a none of their own tag, and the none they pair with (README
# sections 7 and 9): the none path (risk=none) is the same code at both commits.
BASES = ("_represent=_rng", "_step0=_g6,_represent", "_floor=_serr", "_serrchk=_serr")

IDENTITY = ("design", "transform", "method", "risk", "groups", "seed")


def merged(earlier: list[dict], found: list[dict]) -> list[dict]:
    """``earlier`` with every row that a row of ``found`` measures again replaced by it."""
    fresh = {tuple(r.get(k) for k in IDENTITY) for r in found}
    kept = [r for r in earlier if tuple(r.get(k) for k in IDENTITY) not in fresh]
    return kept + found


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table(found: list[dict], bases: dict[str, str] | None = None) -> str:
    """The owned design's rows: one line per (transform, method, risk, groups); ``bases``
    pairs the arms of a tag with the ``none`` runs of another (``--base``)."""
    found = [r for r in found if r.get("design") == "owned"]
    lines = [
        "| transform | method | risk | groups | seeds | "
        + " | ".join(HEADERS)
        + " | rare purity % | rare recall % | Δ clean | Δ worst group |",
        "| --- " * (len(HEADERS) + 9) + "|",
    ]
    for transform, method in sorted({(r["transform"], r["method"]) for r in found}):
        mine = [r for r in found if (r["transform"], r["method"]) == (transform, method)]
        arms = sorted({(r["risk"], r["groups"]) for r in mine}, key=lambda a: (a[0] != "none", a))
        for risk, groups in arms:
            group = [r for r in mine if (r["risk"], r["groups"]) == (risk, groups)]
            cells = [mean_std([r[k] for r in group]) for k in KEYS]
            cells += [
                mean_or_dash([r.get(k) for r in group]) for k in ("rare_purity", "rare_recall")
            ]
            base = base_of(mine, risk, group[0].get("tag", ""), bases or {})
            deltas = [delta(group, base, k) for k in ("test_acc", "worst_group_acc")]
            seeds = ",".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
            name = f"| {transform} | {method} | {risk} | {groups} | {seeds} | "
            lines.append(name + " | ".join(cells + deltas) + " |")
    return "\n".join(lines) + "\n"


def base_of(mine: list[dict], risk: str, tag: str, bases: dict[str, str]) -> list[dict]:
    """The ``none`` rows an arm is paired with: those of its own tag (measured at the same
    commit) if there are any and the arm is not that ``none`` itself, else those of the tag
    ``bases`` names for it, the first that the method has (an arm whose ``none`` ran under
    another tag: the none path is the same code), else the untagged ones."""
    if risk == f"none{tag}":
        return [r for r in mine if r["risk"] == "none"]
    for base_tag in [tag, *bases.get(tag, "").split(",")]:
        own = [r for r in mine if r["risk"] == f"none{base_tag}"] if base_tag else []
        if own:
            return own
    return [r for r in mine if r["risk"] == "none"]


def mean_or_dash(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.mean(present):.1f}" if present else "-"


def delta(group: list[dict], base: list[dict], key: str) -> str:
    """Mean over the seeds both have of (risk - none), in points."""
    by_seed = {r["seed"]: r[key] for r in base}
    diffs = [r[key] - by_seed[r["seed"]] for r in group if r["seed"] in by_seed]
    return f"{statistics.mean(diffs):+.2f}" if diffs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument(
        "--base",
        action="append",
        default=list(BASES),
        metavar="TAG=NONE_TAG[,NONE_TAG...]",
        help="pair the arms of TAG with the none runs of the first NONE_TAG the method has "
        "(defaults: %(default)s)",
    )
    args = parser.parse_args()
    bases = dict(item.split("=", 1) for item in args.base)
    found = merged(earlier_rows(args.out / "results.json"), rows(args.runs))
    (args.out / "results.json").write_text(json.dumps(found, indent=1) + "\n")
    (args.out / "table.md").write_text(table(found, bases))
    print(table(found, bases))


if __name__ == "__main__":
    main()
