"""One report: find the runs, aggregate them, write report.md, report.json and the plots."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdd.config.errors import UserError
from rdd.report.aggregate import (
    MISSING,
    Row,
    aggregate,
    mixed_notes,
    mixed_settings,
    std_note,
)
from rdd.report.plots import (
    cluster_groups,
    grid_groups,
    plot_accuracy_vs_ipc,
    plot_cluster_bars,
    plot_grids,
)
from rdd.report.runs import Run, scan_runs
from rdd.report.tables import arch_table, markdown_table, severity_table, table_columns, wandb_table
from rdd.utils.io import write_json, write_text


@dataclass
class Report:
    """What one `rdd.report` call found and wrote."""

    out: Path
    runs: list[Run]
    rows: list[Row]
    images: list[Path]
    unfinished: list[Path]


def make_report(
    dirs: Sequence[str | Path], out: str | Path | None = None, plots: bool = True
) -> Report:
    """Find the runs under ``dirs`` and write report.md, report.json and (unless ``plots`` is
    false: tables only, in a second) the plots into ``out`` (default ``<first dir>/report``)."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise UserError("no run directory given: pass runs=DIR (a run or Hydra multirun directory)")
    out = Path(out).expanduser() if out is not None else dirs[0] / "report"
    check_out(out)
    runs, unfinished = scan_runs(dirs)
    if not runs:
        raise UserError(
            f"no finished runs (config.yaml and metrics.json) under {', '.join(map(str, dirs))}: "
            "pass a run or Hydra multirun directory"
        )
    rows = aggregate(runs)
    images = save_plots(runs, rows, out) if plots else []
    report = Report(out, runs, rows, images, unfinished)
    previous = owned_files(out)
    write_text(out / "report.md", report_markdown(report, dirs))
    write_json(out / "report.json", report_json(report))
    # Plots of groups that are gone would otherwise linger; only files of the last report go.
    for name in previous - {"report.md", "report.json", *(p.name for p in images)}:
        (out / name).unlink(missing_ok=True)
    return report


def write_report(dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the report of the runs under ``dirs``; returns its directory."""
    return make_report(dirs, out).out


def check_out(out: Path) -> None:
    """Refuse a report folder that is a file (or under one), or that holds a report.md or
    report.json which no rdd.report wrote: a report replaces only its own earlier files."""
    fix = "pass out=<a new folder, or one an earlier rdd.report wrote>"
    folder = out.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(
            f"out={out} is not a folder ('{folder}' is a file): rdd.report writes report.md, "
            f"report.json and plots into a folder; {fix}"
        )
    theirs = [n for n in ("report.md", "report.json") if (out / n).exists()]
    if theirs and not is_report_json(out / "report.json"):
        raise UserError(f"'{out / theirs[0]}' was not written by rdd.report; {fix}")


def is_report_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"rows", "files"} <= data.keys()


def save_plots(runs: Sequence[Run], rows: Sequence[Row], out: Path) -> list[Path]:
    """Every plot as a PNG in ``out``; returns their paths."""
    paths = []
    if any("test_acc" in row.figures for row in rows):
        paths.append(out / "acc_vs_ipc.png")
        plot_accuracy_vs_ipc(rows, paths[-1])
    for dataset, method, ipc in cluster_groups(runs):
        paths.append(out / (slug(f"clusters_{dataset}_{method}_ipc{ipc}") + ".png"))
        plot_cluster_bars(runs, dataset, method, ipc, paths[-1])
    for dataset, ipc in grid_groups(runs):
        paths.append(out / (slug(f"grids_{dataset}_ipc{ipc}") + ".png"))
        plot_grids(runs, dataset, ipc, paths[-1])
    return paths


def slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def owned_files(out: Path) -> set[str]:
    """PNG files the previous report in ``out`` wrote (listed in its report.json)."""
    try:
        files = json.loads((out / "report.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in files if name == Path(name).name and name.endswith(".png")}


def report_markdown(report: Report, dirs: Sequence[Path]) -> str:
    """report.md: the tables, how to read them, and the plots."""
    parts = [
        "# rdd report",
        f"{plural(len(report.runs), 'run')} in {plural(len(report.rows), 'group')} from "
        f"{', '.join(f'`{d}`' for d in dirs)}. Test accuracy in %, mean ± std; "
        f"{MISSING}: not measured.",
        "## Accuracy (headline architecture)",
        markdown_table(report.rows),
        f"{std_note(report.rows)}.",
    ]
    if notes := mixed_notes(report.rows):
        parts += [
            "Groups whose runs differ in more than the seed:",
            "\n".join(f"- {n}" for n in notes),
        ]
    if table := arch_table(report.rows):
        parts += [
            "## Clean accuracy per evaluation architecture",
            table,
            f"{std_note(report.rows)}.",
        ]
    if table := severity_table(report.rows):
        parts += [
            "## Corruption accuracy per severity (mean over corruptions)",
            table,
            f"{std_note(report.rows)}.",
        ]
    if report.images:
        parts += ["## Plots", "\n\n".join(f"![{p.stem}]({p.name})" for p in report.images)]
    return "\n\n".join(parts) + "\n"


def report_json(report: Report) -> dict[str, Any]:
    """report.json: every aggregated figure of every group, machine-readable."""
    rows = [
        {
            "dataset": row.dataset,
            "method": row.method,
            "ipc": row.ipc,
            "risk": row.risk,
            "n": row.n,  # runs
            "seeds": row.seeds,  # distinct seeds among them
            "runs": [str(run.path) for run in row.runs],
            "mixed_settings": mixed_settings(row.runs),
            "figures": {k: {"mean": m, "std": s} for k, (m, s) in row.figures.items()},
        }
        for row in report.rows
    ]
    return {
        "columns": [[key, title] for key, title in table_columns(report.rows).items()],
        "rows": rows,
        "unfinished": [str(p) for p in report.unfinished],
        "files": ["report.md", *(p.name for p in report.images)],
    }


def log_to_wandb(report: Report, project: str, offline: bool) -> None:
    """Log the table (key "report") and every plot (key: its file stem) as one W&B run."""
    import wandb

    try:
        run = wandb.init(
            project=project,
            mode="offline" if offline else "online",
            dir=report.out,
            job_type="report",
            config={"runs": [str(r.path) for r in report.runs]},
        )
    except wandb.errors.Error as err:
        raise UserError(
            f"W&B could not start ({err}): run `wandb login` or pass wandb.offline=true"
        ) from None
    header, body = wandb_table(report.rows)
    images = {p.stem: wandb.Image(str(p)) for p in report.images}
    run.log({"report": wandb.Table(columns=header, data=body), **images})
    run.finish()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
