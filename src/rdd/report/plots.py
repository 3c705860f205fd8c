"""The report's plots: accuracy against IPC, per-cluster accuracy, synthetic-set grids.

Figures are built with matplotlib's object API (no pyplot): nothing global changes, so the
notebook keeps its inline backend and the command line renders PNGs with Agg.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rdd.outputs.summary import plural
from rdd.report.aggregate import Row, distinct_seeds, std_kind
from rdd.report.runs import Run, sort_key
from rdd.utils.io import atomic_write

# line style per risk measure in the IPC plot, the base (risk none) first
RISK_STYLES = [
    {"ls": "-", "marker": "o"},
    {"ls": ":", "marker": "s"},
    {"ls": "-.", "marker": "^"},
    {"ls": (0, (3, 1, 1, 1)), "marker": "D"},
]


def plot_accuracy_vs_ipc(rows: Sequence[Row], path: str | Path | None = None) -> Figure:
    """Clean test accuracy against IPC, one line per method x risk, each its own colour (error
    bars: std, the legend's title says over what), one panel per dataset; the whole-dataset
    reference (`full`) as a dashed horizontal line."""
    datasets = sorted({row.dataset for row in rows})
    fig = Figure(figsize=(5.5 * max(len(datasets), 1), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(datasets), 1)))
    for ax, dataset in zip(axes, datasets, strict=False):
        mine = [r for r in rows if r.dataset == dataset and "test_acc" in r.figures]
        risks = list(dict.fromkeys(r.risk for r in sorted(mine, key=lambda r: r.risk != "none")))
        # An imported set of unequal images per class (ipc "mixed") has no place on the axis.
        mine = [r for r in mine if not isinstance(r.ipc, str)]
        lines = list(dict.fromkeys((r.method, r.risk) for r in mine if r.ipc is not None))
        for method, risk in dict.fromkeys((r.method, r.risk) for r in mine):
            line = [r for r in mine if (r.method, r.risk) == (method, risk)]
            label = method if risk == "none" else f"{method} + {risk}"
            if line[0].ipc is None:
                ax.axhline(line[0].figures["test_acc"][0], ls="--", c="k", label=f"{label} (all)")
                continue
            # Every line its own colour (a base and its robust run must not look alike); the
            # line style and marker name the risk, so the lines of one risk still pair up.
            style = RISK_STYLES[risks.index(risk) % len(RISK_STYLES)]
            colour = f"C{lines.index((method, risk)) % 10}"
            means, stds = zip(*(r.figures["test_acc"] for r in line), strict=True)
            ipcs = [r.ipc for r in line]
            ax.errorbar(ipcs, means, yerr=stds, c=colour, capsize=3, label=label, **style)
        ipcs = sorted({r.ipc for r in mine if r.ipc is not None})
        if ipcs:
            ax.set_xscale("log")
            ax.set_xticks(ipcs, [str(i) for i in ipcs])
            ax.minorticks_off()
        ax.set(title=dataset, xlabel="images per class", ylabel="test accuracy (%)")
        points = [(r.n, r.seeds) for r in mine if r.ipc is not None]
        title = f"error bars: {std_kind(points)}" if points else None
        ax.legend(fontsize="small", title=title, title_fontsize="small")
    return save(fig, path)


def cluster_groups(runs: Sequence[Run]) -> list[tuple[str, str, int]]:
    """(dataset, method, ipc) that have per-cluster details for a base and a robust run."""
    risks: dict[tuple, set[str]] = {}
    for run in runs:
        if run.details is not None and run.key[2] is not None:
            risks.setdefault(run.key[:3], set()).add(run.key[3])
    return sorted(k for k, seen in risks.items() if "none" in seen and len(seen) > 1)


def plot_cluster_bars(
    runs: Sequence[Run], dataset: str, method: str, ipc: int, path: str | Path | None = None
) -> Figure:
    """Per-cluster test accuracy of the base (risk none) and robust runs side by side: the mean
    over runs of the mean over networks (error bars as in the table)."""
    mine = [r for r in runs if r.key[:3] == (dataset, method, ipc) and r.details is not None]
    by_risk: dict[str, list[Run]] = {}
    for run in sorted(mine, key=lambda r: sort_key(r.key)):
        by_risk.setdefault(run.key[3], []).append(run)
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(by_risk), 1)
    for i, (risk, group) in enumerate(by_risk.items()):
        means, stds = cluster_accuracy(group)
        x = np.arange(len(means)) + (i - (len(by_risk) - 1) / 2) * width
        label = f"{'base' if risk == 'none' else risk} ({seeds_label(group)})"
        ax.bar(x, means, width, yerr=stds, capsize=2, color=f"C{i % 10}", label=label)
        ax.set_xticks(range(len(means)))
    ax.set(
        title=f"{dataset} {method} ipc {ipc}: accuracy per test cluster",
        xlabel="cluster",
        ylabel="test accuracy (%)",
    )
    groups = by_risk.values()
    bars = std_kind((len(g), distinct_seeds(g)) for g in groups)  # as cluster_accuracy takes it
    # Beside the axes, not on them: bars fill the plot up to its top, so any corner covers some.
    ax.legend(
        fontsize="small",
        title="\n".join(textwrap.wrap(f"error bars: {bars}", 34)),  # narrow: the bars keep room
        title_fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
        borderaxespad=0,
    )
    return save(fig, path)


def seeds_label(runs: Sequence[Run]) -> str:
    """``3 seeds``, or ``1 seed, 2 runs`` where runs share a seed."""
    seeds = distinct_seeds(runs)
    label = f"{seeds} seed{'s' * (seeds != 1)}"
    return label if seeds == len(runs) else f"{label}, {len(runs)} runs"


def cluster_accuracy(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per cluster over runs of the headline architecture's (K,) accuracies."""
    per_net = [np.asarray(headline_details(r)["cluster_acc"], dtype=float) for r in runs]
    means = np.stack([acc.mean(axis=0) for acc in per_net])  # (runs, K)
    if len(runs) >= 2:
        return means.mean(axis=0), means.std(axis=0)
    return means[0], per_net[0].std(axis=0)


def headline_details(run: Run) -> dict[str, Any]:
    """eval_details of the headline (first evaluated) architecture."""
    archs = run.details["archs"]
    nets = run.get("eval.nets") or []
    if nets and nets[0] in archs:
        return archs[nets[0]]
    # eval.nets: null evaluates the run's own net: the one whose figures are the headline ones.
    for arch in sorted(archs):
        if run.metrics.get(f"{arch}/test_acc") == run.metrics.get("test_acc"):
            return archs[arch]
    return archs[sorted(archs)[0]]


def grid_groups(runs: Sequence[Run]) -> list[tuple[str, int]]:
    """(dataset, ipc) with at least one synthetic-set image."""
    return sorted(
        {(r.key[0], r.key[2]) for r in runs if r.key[2] is not None and grid_path(r).is_file()}
    )


def grid_path(run: Run) -> Path:
    return run.path / "synset.png"


def plot_grids(
    runs: Sequence[Run], dataset: str, ipc: int, path: str | Path | None = None
) -> Figure:
    """The synthetic set of one run (the lowest seed) per method x risk, side by side."""
    chosen: dict[tuple[str, str], Run] = {}
    for run in sorted(runs, key=lambda r: (sort_key(r.key), r.seed)):
        if run.key[0] == dataset and run.key[2] == ipc and grid_path(run).is_file():
            chosen.setdefault((run.method, run.key[3]), run)
    fig = Figure(figsize=(3.2 * max(len(chosen), 1), 3.6), layout="constrained")
    for ax, ((method, risk), run) in zip(
        np.atleast_1d(fig.subplots(1, max(len(chosen), 1))), chosen.items(), strict=False
    ):
        ax.imshow(read_image(grid_path(run)))
        ax.set_title(f"{method} / {risk}\nseed {run.seed}", fontsize="small")
        ax.axis("off")
    fig.suptitle(f"{dataset}, {plural(ipc, 'image')} per class")
    return save(fig, path)


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def save(fig: Figure, path: str | Path | None) -> Figure:
    """Write the figure as a PNG (atomically) when a path is given; returns it."""
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return fig
