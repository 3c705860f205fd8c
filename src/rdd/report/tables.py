"""The report's tables (markdown, readable as plain text) and the W&B table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rdd.outputs.columns import figure_columns
from rdd.report.aggregate import Row

# "seeds": how many distinct seeds a row averages (and how many runs, where some share a seed);
# what its ± is says rdd.report.aggregate.std_note.
LABELS = ["dataset", "method", "ipc", "risk", "seeds"]


def format_table(header: list[str], body: list[list[str]]) -> str:
    """A markdown table with padded columns, readable as plain text too."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def table_columns(rows: Sequence[Row]) -> dict[str, str]:
    """The main table's figure columns that at least one row has (no validation accuracy:
    the report compares test figures; val_acc is for model selection)."""
    return figure_columns((key for row in rows for key in row.figures), skip=("val_acc",))


def markdown_table(rows: Sequence[Row]) -> str:
    """Headline architecture: clean, subgroup and shifted accuracy, one row per group (its
    ± is :func:`rdd.report.aggregate.std_note`)."""
    columns = table_columns(rows)
    body = [row.labels() + [row.cell(key) for key in columns] for row in rows]
    return format_table(LABELS + list(columns.values()), body)


def architectures(rows: Sequence[Row]) -> list[str]:
    """Evaluated architectures, in the order the runs' eval.nets list them."""
    archs: list[str] = []
    for run in (run for row in rows for run in row.runs):
        prefixes = sorted(k.split("/")[0] for k in run.metrics if k.endswith("/test_acc"))
        for arch in [*(run.get("eval.nets") or []), *prefixes]:
            if arch not in archs and f"{arch}/test_acc" in run.metrics:
                archs.append(arch)
    return archs


def arch_table(rows: Sequence[Row]) -> str:
    """Clean test accuracy per architecture; empty when only one architecture was evaluated."""
    archs = architectures(rows)
    if len(archs) < 2:
        return ""
    body = [row.labels() + [row.cell(f"{arch}/test_acc") for arch in archs] for row in rows]
    return format_table(LABELS + archs, body)


def severities_in(rows: Sequence[Row]) -> set[int]:
    pattern = re.compile(r"^corruption_s(\d+)_acc$")
    return {int(m.group(1)) for r in rows for k in r.figures if (m := pattern.match(k))}


def severity_table(rows: Sequence[Row]) -> str:
    """Corruption accuracy per severity (averaged over corruptions); empty when none."""
    levels = sorted(severities_in(rows))
    with_data = [r for r in rows if any(f"corruption_s{s}_acc" in r.figures for s in levels)]
    if not with_data:
        return ""
    body = [r.labels() + [r.cell(f"corruption_s{s}_acc") for s in levels] for r in with_data]
    return format_table(LABELS + [f"s{s}" for s in levels], body)


def wandb_table(rows: Sequence[Row]) -> tuple[list[str], list[list[Any]]]:
    """The main table with numbers (sortable on W&B): a mean and a std column per figure."""
    columns = table_columns(rows)
    header = LABELS + [f"{title}{part}" for title in columns.values() for part in ("", " std")]
    body = [
        row.labels()[:4]
        + [row.seeds]
        + [row.figures[k][i] if k in row.figures else None for k in columns for i in (0, 1)]
        for row in rows
    ]
    return header, body
