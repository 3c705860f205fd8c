"""The short table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# metrics.json key -> column title, in display order (percent, mean ± std over networks)
COLUMNS = {
    "test_acc": "test acc %",
    "val_acc": "val acc %",
    "worst_class_acc": "worst class %",
    "mean_cluster_acc": "mean cluster %",
    "worst_cluster_acc": "worst cluster %",
    "noise_acc": "noise %",
    "blur_acc": "blur %",
    "invert_acc": "invert %",
    "corruption_acc": "corruptions %",
}


def format_summary(cfg: Any, data: Any, metrics: dict[str, float], out_dir: Path) -> str:
    """A few readable lines: what ran, how long, and accuracy per evaluated architecture."""
    archs = sorted({k.split("/")[0] for k in metrics if k.endswith("/test_acc")})
    h, w = data.im_size
    rows = [
        "",
        f"rdd | {data.name} ({data.num_classes} classes, {data.channel}x{h}x{w}) | {cfg.matching.name} "
        f"| risk {cfg.risk.name} | ipc {cfg.ipc} | seed {cfg.seed}",
        f"distill {metrics['distill_seconds']:.1f} s | evaluation {metrics['eval_seconds']:.1f} s "
        f"({cfg.eval.num_nets} nets x {cfg.eval.epochs} epochs, DSA {'on' if cfg.eval.dsa else 'off'})",
    ]
    columns = [key for key in COLUMNS if f"{archs[0]}/{key}" in metrics] if archs else []
    rows.append(f"{'net':<12}" + "".join(f"{COLUMNS[key]:>17}" for key in columns))
    for arch in archs:
        cells = [
            f"{metrics[f'{arch}/{key}']:6.2f} ± {metrics[f'{arch}/{key}_std']:5.2f}"
            for key in columns
        ]
        rows.append(f"{arch:<12}" + "".join(f"{c:>17}" for c in cells))
    rows.append(f"outputs: {out_dir}")
    return "\n".join(rows)
