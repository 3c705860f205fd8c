"""Mean and std over seeds of the runs under a multirun directory, as a markdown table.

    python benchmarks/aggregate_runs.py logs/.../multiruns/DIR --by risk.name

Each run directory holds `metrics.json` (accuracy in percent, already averaged over the
evaluation networks) and `.hydra/config.yaml`; runs are grouped by the dotted config keys
given with --by, and the std is over the runs of a group (the seeds).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from rdd.outputs.files import read_metrics

METRICS = ("test_acc", "mean_cluster_acc", "worst_cluster_acc", "worst_class_acc")


def load_runs(sweep_dir: Path) -> list[tuple[dict, dict]]:
    runs = []
    for metrics_file in sorted(sweep_dir.glob("*/metrics.json")):
        cfg = OmegaConf.load(metrics_file.parent / ".hydra" / "config.yaml")
        runs.append((OmegaConf.to_container(cfg, resolve=False), read_metrics(metrics_file)))
    if not runs:
        raise SystemExit(f"error: no */metrics.json under {sweep_dir}; pass a multirun directory")
    return runs


def lookup(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def table(runs: list[tuple[dict, dict]], by: list[str]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for cfg, metrics in runs:
        groups.setdefault(tuple(str(lookup(cfg, key)) for key in by), []).append(metrics)
    header = [*by, "runs", *METRICS, "distill s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for key, group in groups.items():
        cells = [*key, str(len(group))]
        for name in (*METRICS, "distill_seconds"):
            values = [m[name] for m in group if name in m]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {std:.2f}" if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--by", nargs="+", default=["risk.name"], help="dotted config keys")
    args = parser.parse_args()
    print(table(load_runs(args.sweep_dir), args.by))


if __name__ == "__main__":
    main()
