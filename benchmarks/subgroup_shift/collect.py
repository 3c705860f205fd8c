"""Collect the rare-subgroup benchmark's runs into results.json and a markdown table.

    .venv/bin/python benchmarks/subgroup_shift/collect.py benchmarks/subgroup_shift/runs \
        [--out benchmarks/subgroup_shift]

Every run directory ``<method>_<risk>_s<seed>[tag]`` (at any depth) with a metrics.json gives
one row ``{"subgroup", "method", "risk", "seed", "test_acc", "worst_group_acc",
"worst_cluster_acc", "altered_acc", ...}`` (percent); the table shows mean ± std over seeds and
each risk's change against ``none`` (same subgroup, method and seed).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from rdd.outputs import read_metrics

NAME = re.compile(r"(?P<method>[a-z]+)_(?P<risk>[a-z_]+?)_s(?P<seed>\d+)(?P<tag>.*)$")
KEYS = ("test_acc", "worst_group_acc", "worst_cluster_acc", "altered_acc")
HEADERS = ("clean test", "worst group", "worst cluster", "altered test")


def rows(runs: Path) -> list[dict]:
    found = []
    for metrics in sorted(runs.glob("**/metrics.json")):
        match = NAME.match(metrics.parent.name)
        if not match:
            continue
        values = read_metrics(metrics)
        altered = [k for k in values if k.startswith("group_") and k.endswith("_acc")]
        altered.remove("group_clean_acc")
        values["altered_acc"] = values[altered[0]]
        row = {"subgroup": altered[0][len("group_") : -len("_acc")], "method": match["method"]}
        row["risk"] = match["risk"] + match["tag"]
        row["seed"] = int(match["seed"])
        row |= {key: round(values[key], 2) for key in KEYS if key in values}
        row |= {key: round(values[key], 1) for key in ("distill_seconds", "eval_seconds")}
        found.append(row)
    return found


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table(found: list[dict]) -> str:
    lines = [
        "| subgroup | method | risk | seeds | "
        + " | ".join(HEADERS)
        + " | Δ clean | Δ worst group |",
        "| --- " * (len(HEADERS) + 6) + "|",
    ]
    for subgroup, method in sorted({(r["subgroup"], r["method"]) for r in found}):
        mine = [r for r in found if (r["subgroup"], r["method"]) == (subgroup, method)]
        base = [r for r in mine if r["risk"] == "none"]
        for risk in sorted({r["risk"] for r in mine}, key=lambda x: (x != "none", x)):
            group = [r for r in mine if r["risk"] == risk]
            cells = [mean_std([r[k] for r in group]) for k in KEYS]
            deltas = [delta(group, base, k) for k in ("test_acc", "worst_group_acc")]
            seeds = ",".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
            name = f"| {subgroup} | {method} | {risk} | {seeds} | "
            lines.append(name + " | ".join(cells + deltas) + " |")
    return "\n".join(lines) + "\n"


def delta(group: list[dict], base: list[dict], key: str) -> str:
    """Mean over the seeds both have of (risk - none), in points."""
    by_seed = {r["seed"]: r[key] for r in base}
    diffs = [r[key] - by_seed[r["seed"]] for r in group if r["seed"] in by_seed]
    return f"{statistics.mean(diffs):+.2f}" if diffs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    found = rows(args.runs)
    (args.out / "results.json").write_text(json.dumps(found, indent=1) + "\n")
    (args.out / "table.md").write_text(table(found))
    print(table(found))


if __name__ == "__main__":
    main()
