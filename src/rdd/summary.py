"""The short table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def format_summary(cfg: Any, data: Any, metrics: dict[str, float], out_dir: Path) -> str:
    """A few readable lines: what ran, how long, and accuracy per evaluated architecture."""
    archs = sorted({k.split("/")[0] for k in metrics if k.endswith("/test_acc")})
    h, w = data.im_size
    rows = [
        "",
        f"rdd | {data.name} ({data.num_classes} classes, {data.channel}x{h}x{w}) | {cfg.matching.name} "
        f"| ipc {cfg.ipc} | seed {cfg.seed}",
        f"distill {metrics['distill_seconds']:.1f} s | evaluation {metrics['eval_seconds']:.1f} s "
        f"({cfg.eval.num_nets} nets x {cfg.eval.epochs} epochs, DSA {'on' if cfg.eval.dsa else 'off'})",
        f"{'net':<12}{'test acc %':>16}{'val acc %':>16}{'worst class %':>16}",
    ]
    for arch in archs:
        cells = [
            f"{metrics[f'{arch}/{key}']:6.2f} ± {metrics[f'{arch}/{key}_std']:5.2f}"
            for key in ("test_acc", "val_acc", "worst_class_acc")
        ]
        rows.append(f"{arch:<12}" + "".join(f"{c:>16}" for c in cells))
    rows.append(f"outputs: {out_dir}")
    return "\n".join(rows)
