"""Grouping runs by (dataset, method, ipc, risk) and averaging every figure over seeds."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from omegaconf import OmegaConf

from rdd.config.compose import flatten
from rdd.report.runs import Run, sort_key

MISSING = "–"
SEVERITY_KEY = re.compile(r"^corruption_(.+)_s(\d+)_acc$")
# Config entries that may differ between the seeds of one group: seeds, where outputs go, how
# progress is shown, which file rdd.evaluate read (source). Any other difference means the
# group mixes settings (see mixed_settings).
VARYING_KEYS = {"seed", "clustering.seed", "experts.seed", "experts.root", "data.subgroup.seed"}
VARYING_GROUPS = {"paths", "logger", "trainer", "hydra", "task_name", "optimized_metric", "source"}


@dataclass
class Row:
    """One group of runs (seeds) with every figure as (mean, std) in percent."""

    dataset: str
    method: str
    ipc: int | str | None
    risk: str
    runs: list[Run] = field(repr=False)
    figures: dict[str, tuple[float, float]]

    @property
    def n(self) -> int:
        """Runs averaged."""
        return len(self.runs)

    @property
    def seeds(self) -> int:
        """Distinct seeds among them (two search trials of seed 0 are one seed)."""
        return distinct_seeds(self.runs)

    @property
    def name(self) -> str:
        return "/".join(self.labels()[:4])

    def labels(self) -> list[str]:
        ipc = "all" if self.ipc is None else str(self.ipc)
        return [self.dataset, self.method, ipc, self.risk, seeds_cell(self.n, self.seeds)]

    def cell(self, key: str) -> str:
        if key not in self.figures:
            return MISSING
        mean, std = self.figures[key]
        return f"{mean:.2f} ± {std:.2f}"


def aggregate(runs: Sequence[Run]) -> list[Row]:
    """One row per (dataset, method, ipc, risk): the mean over runs of every figure; the std is
    the population std over runs when there are two or more, else the run's own std over
    evaluation networks."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    rows = []
    for key in sorted(groups, key=sort_key):
        members = groups[key]
        per_run = [run_figures(run) for run in members]
        names = sorted({name for figures in per_run for name in figures})
        figures = {name: combine([f[name] for f in per_run if name in f]) for name in names}
        rows.append(Row(*key, runs=members, figures=figures))
    return rows


def distinct_seeds(runs: Iterable[Run]) -> int:
    return len({run.seed for run in runs})


def seeds_cell(runs: int, seeds: int) -> str:
    """The seeds column: ``3``, or ``1 (2 runs)`` where runs share a seed."""
    return str(seeds) if seeds == runs else f"{seeds} ({runs} runs)"


def run_figures(run: Run) -> dict[str, tuple[float, float]]:
    """(value, std over networks) of every figure of one run, with the corruption accuracy per
    severity averaged over corruption names (``corruption_s<k>_acc``). Flags (eval_complete)
    and durations are no figures."""
    metrics = run.metrics
    figures = {
        key: (float(value), float(metrics.get(f"{key}_std", 0.0)))
        for key, value in metrics.items()
        if not key.endswith(("_std", "_seconds")) and not isinstance(value, bool)
    }
    by_severity: dict[int, list[tuple[float, float]]] = {}
    for key, pair in figures.items():
        match = SEVERITY_KEY.match(key)
        if match:
            by_severity.setdefault(int(match.group(2)), []).append(pair)
    for severity, pairs in by_severity.items():
        # The mean of the stds bounds the std of the average over corruptions from above.
        figures[f"corruption_s{severity}_acc"] = tuple(np.mean(pairs, axis=0).tolist())
    return figures


def combine(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean over runs; std over runs (ddof=0) for two or more runs, else the run's own std."""
    values = np.array([value for value, _ in pairs])
    std = float(values.std()) if len(pairs) >= 2 else pairs[0][1]
    return float(values.mean()), std


# What the std of a group is over (see combine): as the only kind, and beside a main one.
SPREADS = {
    "seeds": ("over seeds", ""),
    "runs": ("over runs, some sharing a seed", "over runs where runs share a seed"),
    "nets": (
        "over evaluation networks (one seed)",
        "over evaluation networks where there is one seed",
    ),
}


def spread(runs: int, seeds: int) -> str:
    """What the std of a group of ``runs`` runs with ``seeds`` distinct seeds is over."""
    if runs < 2:
        return "nets"
    return "seeds" if seeds == runs else "runs"


def std_kind(groups: Iterable[tuple[int, int]]) -> str:
    """What the std of rows (or plot points) is, from their (runs, distinct seeds): over seeds,
    over runs that share seeds (e.g. search trials), over a single run's evaluation networks
    (see :func:`combine`), or which is which."""
    present = {spread(*group) for group in groups}
    kinds = [k for k in SPREADS if k in present]
    main, *rest = kinds or ["seeds"]  # "nets" comes last: never the main kind of a mixture
    beside = f" ({'; '.join(SPREADS[k][1] for k in rest)})" if rest else ""
    return f"std {SPREADS[main][0]}{beside}"


def std_note(rows: Sequence[Row]) -> str:
    """The line under a table that says what its ± is."""
    kind = std_kind((row.n, row.seeds) for row in rows)
    return f"± is the {kind}; the seeds column counts distinct seeds (and runs, where they differ)"


def mixed_settings(runs: Sequence[Run]) -> list[str]:
    """Config entries (dotted) on which the runs of one group disagree, beyond the seed and
    output paths: their mean mixes different experiments (e.g. budgets)."""
    flat = [flatten(OmegaConf.to_container(run.config)) for run in runs]
    keys = set().union(*flat)
    return sorted(
        key
        for key in keys
        if key not in VARYING_KEYS
        and key.split(".")[0] not in VARYING_GROUPS
        and len({repr(entries.get(key)) for entries in flat}) > 1
    )


def mixed_notes(rows: Sequence[Row], most: int = 4) -> list[str]:
    """One line per group whose runs differ in more than the seed."""
    notes = []
    for row in rows:
        keys = mixed_settings(row.runs)
        if keys:
            more = f" and {len(keys) - most} more" if len(keys) > most else ""
            notes.append(f"{row.name} mixes runs that differ in {', '.join(keys[:most])}{more}")
    return notes
