"""The short table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rdd.outputs.columns import figure_columns


def format_summary(cfg: Any, data: Any, metrics: dict[str, float], out_dir: Path) -> str:
    """A few readable lines: what ran, how long, and accuracy per evaluated architecture."""
    archs = sorted({k.split("/")[0] for k in metrics if k.endswith("/test_acc")})
    h, w = data.im_size
    rows = [
        "",
        f"rdd | {data.name} ({data.num_classes} classes, {data.channel}x{h}x{w}) | {cfg.matching.name} "
        f"| risk {cfg.risk.name} | ipc {cfg.ipc} | seed {cfg.seed}",
        # rdd.evaluate has no distillation time (and foreign sets never had one).
        (f"distill {metrics['distill_seconds']:.1f} s | " if "distill_seconds" in metrics else "")
        + f"evaluation {metrics['eval_seconds']:.1f} s "
        f"({plural(cfg.eval.num_nets, 'net')} x {plural(cfg.eval.epochs, 'epoch')}, "
        f"DSA {'on' if cfg.eval.dsa else 'off'})",
    ]
    columns = summary_columns(metrics, archs[0]) if archs else {}
    widths = [max(17, len(title) + 2) for title in columns.values()]
    titles = zip(columns.values(), widths, strict=True)
    rows.append(f"{'net':<12}" + "".join(f"{title:>{w}}" for title, w in titles))
    for arch in archs:
        cells = [
            f"{metrics[f'{arch}/{key}']:6.2f} ± {metrics[f'{arch}/{key}_std']:5.2f}"
            for key in columns
        ]
        rows.append(
            f"{arch:<12}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    rows.append(f"outputs: {out_dir}")
    return "\n".join(rows)


def plural(count: int, noun: str) -> str:
    """``1 net``, ``5 nets``: a count with its noun."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def summary_columns(metrics: dict[str, float], arch: str) -> dict[str, str]:
    """metrics.json key (without the ``<arch>/`` prefix) -> title of every figure ``arch`` has."""
    prefix = f"{arch}/"
    keys = [k[len(prefix) :] for k in metrics if k.startswith(prefix)]
    return {key: f"{title} %" for key, title in figure_columns(keys).items()}
