"""`python -m rdd.report DIR...`: one table and a few plots from finished runs.

Reads every run directory (``config.yaml`` + ``metrics.json``) under the given directories,
groups runs by (dataset, method, ipc, risk), averages over seeds and writes ``report.md``,
``report.json`` and PNG plots; optionally logs them to W&B. The notebook
``notebooks/analysis.ipynb`` uses the same functions.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from rdd.cli import fail
from rdd.config import flatten
from rdd.errors import UserError
from rdd.io import atomic_write, write_json, write_text

# metrics.json key -> column title of the main table, in display order
COLUMNS = {
    "test_acc": "clean",
    "mean_cluster_acc": "mean cluster",
    "worst_cluster_acc": "worst cluster",
    "group_*": "{} group",  # each altered known group (data.subgroup): group_<transform>_acc
    "worst_group_acc": "worst group",
    "worst_class_acc": "worst class",
    "noise_acc": "noise",
    "blur_acc": "blur",
    "invert_acc": "invert",
    "corruption_acc": "corruptions",
}
LABELS = ["dataset", "method", "ipc", "risk", "n"]
MISSING = "–"
SEVERITY_KEY = re.compile(r"^corruption_(.+)_s(\d+)_acc$")
GROUP_KEY = re.compile(r"^group_(.+)_acc$")
# Config entries that may differ between the seeds of one group: seeds, where outputs go, how
# progress is shown. Any other difference means the group mixes settings (see mixed_settings).
VARYING_KEYS = {"seed", "clustering.seed", "experts.seed", "experts.root", "data.subgroup.seed"}
VARYING_GROUPS = {"paths", "logger", "trainer", "hydra", "task_name", "optimized_metric"}
OPTIONS = {"out": None, "logger": "none", "wandb.project": "rdd", "wandb.offline": "false"}
# line style per risk measure in the IPC plot, the base (risk none) first
RISK_STYLES = [
    {"ls": "-", "marker": "o"},
    {"ls": ":", "marker": "s"},
    {"ls": "-.", "marker": "^"},
    {"ls": (0, (3, 1, 1, 1)), "marker": "D"},
]
USAGE = (
    "usage: python -m rdd.report DIR... [out=PATH] [logger=wandb|none] [wandb.project=rdd] "
    "[wandb.offline=true|false]"
)


@dataclass
class Run:
    """One finished run directory: its resolved config, metrics and per-network details."""

    path: Path
    config: DictConfig
    metrics: dict[str, float]
    details: dict[str, Any] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return OmegaConf.select(self.config, key, default=default)

    @property
    def method(self) -> str:
        return str(self.get("matching.name", "?"))

    @property
    def dataset(self) -> str:
        """The dataset's name, with the transform of its known rare subgroup when the run has
        one (``digits+invert``): such runs are another benchmark, not seeds of the clean one."""
        name, subgroup = str(self.get("data.name", "?")), self.get("data.subgroup")
        if subgroup is None:
            return name
        return f"{name}+{subgroup if isinstance(subgroup, str) else subgroup.get('transform')}"

    @property
    def key(self) -> tuple[str, str, int | None, str]:
        """(dataset, method, ipc, risk); the whole-dataset reference has no ipc."""
        ipc = None if self.method == "full" else int(self.get("ipc", 0))
        return self.dataset, self.method, ipc, str(self.get("risk.name", "none"))

    @property
    def seed(self) -> int:
        return int(self.get("seed", 0))


@dataclass
class Row:
    """One group of runs (seeds) with every figure as (mean, std) in percent."""

    dataset: str
    method: str
    ipc: int | None
    risk: str
    runs: list[Run] = field(repr=False)
    figures: dict[str, tuple[float, float]]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def name(self) -> str:
        return "/".join(self.labels()[:4])

    def labels(self) -> list[str]:
        ipc = "all" if self.ipc is None else str(self.ipc)
        return [self.dataset, self.method, ipc, self.risk, str(self.n)]

    def cell(self, key: str) -> str:
        if key not in self.figures:
            return MISSING
        mean, std = self.figures[key]
        return f"{mean:.2f} ± {std:.2f}"


# ----------------------------------------------------------------------------- finding runs


def scan_runs(dirs: Iterable[str | Path]) -> tuple[list[Run], list[Path]]:
    """Finished runs under ``dirs`` (recursively) and the directories of unfinished ones."""
    runs, unfinished = [], []
    for root in map(Path, dirs):
        if not root.is_dir():
            raise UserError(
                f"directory '{root}' does not exist: pass a run or Hydra multirun directory "
                "(e.g. logs/distill/multiruns)"
            )
        for path in run_dirs(root):
            if (path / "metrics.json").is_file():
                runs.append(load_run(path))
            else:
                unfinished.append(path)
    return sorted(runs, key=lambda r: (sort_key(r.key), r.seed, str(r.path))), unfinished


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every finished run (config.yaml and metrics.json) under ``dirs``."""
    return scan_runs(dirs)[0]


def run_dirs(root: Path) -> Iterable[Path]:
    """Directories that are runs, finished or not; a run's own subfolders are not searched."""
    if (root / "config.yaml").is_file() or (root / ".hydra").is_dir():
        yield root
        return
    for child in sorted(root.iterdir()):
        # Hidden folders (.hydra) and W&B folders hold config.yaml files that are not runs.
        if child.is_dir() and not child.name.startswith(".") and child.name != "wandb":
            yield from run_dirs(child)


def load_run(path: Path) -> Run:
    """Read one run directory; a config.yaml missing from a finished run is a user error."""
    if not (path / "config.yaml").is_file():
        raise UserError(f"run '{path}' has metrics.json but no config.yaml: restore or remove it")
    details_path = path / "eval_details.json"
    return Run(
        path=path,
        config=OmegaConf.load(path / "config.yaml"),
        metrics=read_json(path / "metrics.json"),
        details=read_json(details_path) if details_path.is_file() else None,
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"'{path}' is not valid JSON ({err}): rerun or remove that run") from None


# ----------------------------------------------------------------------------- aggregating


def sort_key(key: tuple[str, str, int | None, str]) -> tuple:
    """Dataset, method, ipc (the whole-dataset 'all' last), risk with the base 'none' first."""
    dataset, method, ipc, risk = key
    return dataset, method, ipc is None, ipc or 0, risk != "none", risk


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


def run_figures(run: Run) -> dict[str, tuple[float, float]]:
    """(value, std over networks) of every figure of one run, with the corruption accuracy per
    severity averaged over corruption names (``corruption_s<k>_acc``)."""
    metrics = run.metrics
    figures = {
        key: (float(value), float(metrics.get(f"{key}_std", 0.0)))
        for key, value in metrics.items()
        if not key.endswith("_std") and not key.endswith("_seconds")
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


# ----------------------------------------------------------------------------- tables


def format_table(header: list[str], body: list[list[str]]) -> str:
    """A markdown table with padded columns, readable as plain text too."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def table_columns(rows: Sequence[Row]) -> dict[str, str]:
    """The main table's figure columns that at least one row has."""
    present = {key for row in rows for key in row.figures}
    columns = {}
    for key, title in COLUMNS.items():
        if key == "group_*":  # the clean known group is the clean column already
            names = sorted(m.group(1) for k in present if (m := GROUP_KEY.match(k)))
            columns |= {f"group_{n}_acc": title.format(n) for n in names if n != "clean"}
        elif key in present:
            columns[key] = title
    return columns


def markdown_table(rows: Sequence[Row]) -> str:
    """Headline architecture: clean, subgroup and shifted accuracy, one row per group."""
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


# ----------------------------------------------------------------------------- plots
# Figures are built with matplotlib's object API (no pyplot): nothing global changes, so the
# notebook keeps its inline backend and the command line renders PNGs with Agg.


def plot_accuracy_vs_ipc(rows: Sequence[Row], path: str | Path | None = None) -> Figure:
    """Clean test accuracy against IPC, one line per method x risk (error bars: std), one
    panel per dataset; the whole-dataset reference (`full`) as a dashed horizontal line."""
    datasets = sorted({row.dataset for row in rows})
    fig = Figure(figsize=(5.5 * max(len(datasets), 1), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(datasets), 1)))
    for ax, dataset in zip(axes, datasets, strict=False):
        mine = [r for r in rows if r.dataset == dataset and "test_acc" in r.figures]
        methods = list(dict.fromkeys(r.method for r in mine))
        risks = list(dict.fromkeys(r.risk for r in sorted(mine, key=lambda r: r.risk != "none")))
        for method, risk in dict.fromkeys((r.method, r.risk) for r in mine):
            line = [r for r in mine if (r.method, r.risk) == (method, risk)]
            label = method if risk == "none" else f"{method} + {risk}"
            if line[0].ipc is None:
                ax.axhline(line[0].figures["test_acc"][0], ls="--", c="k", label=f"{label} (all)")
                continue
            # A method keeps its colour across risks, so base and robust lines pair up.
            style = RISK_STYLES[risks.index(risk) % len(RISK_STYLES)]
            colour = f"C{methods.index(method) % 10}"
            means, stds = zip(*(r.figures["test_acc"] for r in line), strict=True)
            ipcs = [r.ipc for r in line]
            ax.errorbar(ipcs, means, yerr=stds, c=colour, capsize=3, label=label, **style)
        ipcs = sorted({r.ipc for r in mine if r.ipc is not None})
        if ipcs:
            ax.set_xscale("log")
            ax.set_xticks(ipcs, [str(i) for i in ipcs])
            ax.minorticks_off()
        ax.set(title=dataset, xlabel="images per class", ylabel="test accuracy (%)")
        ax.legend(fontsize="small")
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
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(by_risk), 1)
    for i, (risk, group) in enumerate(by_risk.items()):
        means, stds = cluster_accuracy(group)
        x = np.arange(len(means)) + (i - (len(by_risk) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=2, label="base" if risk == "none" else risk)
        ax.set_xticks(range(len(means)))
    ax.set(
        title=f"{dataset} {method} ipc {ipc}: accuracy per test cluster",
        xlabel="cluster",
        ylabel="test accuracy (%)",
    )
    ax.legend(fontsize="small")
    return save(fig, path)


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
    fig.suptitle(f"{dataset}, {ipc} images per class")
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


# ----------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What one `rdd.report` call found and wrote."""

    out: Path
    runs: list[Run]
    rows: list[Row]
    images: list[Path]
    unfinished: list[Path]


def make_report(dirs: Sequence[str | Path], out: str | Path | None = None) -> Report:
    """Find the runs under ``dirs`` and write report.md, report.json and the plots into ``out``
    (default ``<first dir>/report``)."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise UserError(f"no run directory given: {USAGE}")
    runs, unfinished = scan_runs(dirs)
    if not runs:
        raise UserError(
            f"no finished runs (config.yaml and metrics.json) under {', '.join(map(str, dirs))}: "
            "pass a run or Hydra multirun directory"
        )
    out = Path(out) if out is not None else dirs[0] / "report"
    rows = aggregate(runs)
    images = save_plots(runs, rows, out)
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
        f"{', '.join(f'`{d}`' for d in dirs)}. Test accuracy in %, mean ± std over runs "
        "(seeds); a group with one run shows the std over its evaluation networks. "
        f"{MISSING}: not measured.",
        "## Accuracy (headline architecture)",
        markdown_table(report.rows),
    ]
    if notes := mixed_notes(report.rows):
        parts += [
            "Groups whose runs differ in more than the seed:",
            "\n".join(f"- {n}" for n in notes),
        ]
    if table := arch_table(report.rows):
        parts += ["## Clean accuracy per evaluation architecture", table]
    if table := severity_table(report.rows):
        parts += ["## Corruption accuracy per severity (mean over corruptions)", table]
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
            "n": row.n,
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


def wandb_table(rows: Sequence[Row]) -> tuple[list[str], list[list[Any]]]:
    """The main table with numbers (sortable on W&B): a mean and a std column per figure."""
    columns = table_columns(rows)
    header = LABELS + [f"{title}{part}" for title in columns.values() for part in ("", " std")]
    body = [
        row.labels()[:4]
        + [row.n]
        + [row.figures[k][i] if k in row.figures else None for k in columns for i in (0, 1)]
        for row in rows
    ]
    return header, body


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


# ----------------------------------------------------------------------------- command line


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def parse_args(argv: Sequence[str]) -> tuple[list[Path], dict[str, Any]]:
    """Directories and key=value options; an unknown key is a user error."""
    dirs, options = [], dict(OPTIONS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in OPTIONS:
            options[key] = value
        elif (sep or arg.startswith("-")) and not Path(arg).exists():
            raise UserError(
                f"unknown option '{key}': use out=PATH, logger=wandb|none, wandb.project=NAME "
                "or wandb.offline=true|false"
            )
        else:
            dirs.append(Path(arg))
    if not dirs:
        raise UserError(f"no run directory given: {USAGE}")
    if options["logger"] not in ("wandb", "none"):
        raise UserError(f"unknown logger '{options['logger']}': use logger=wandb or logger=none")
    options["wandb.offline"] = parse_bool("wandb.offline", options["wandb.offline"])
    return dirs, options


def parse_bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise UserError(f"{key} must be true or false, got '{value}'")
    return lowered in ("true", "1", "yes")


def found_line(report: Report) -> str:
    line = f"found {plural(len(report.runs), 'run')} in {plural(len(report.rows), 'group')}"
    if report.unfinished:  # e.g. jobs of a sweep still running, or crashed ones
        line += f"; skipped {plural(len(report.unfinished), 'unfinished run')} (no metrics.json)"
    return line


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        return
    try:
        dirs, options = parse_args(argv)
        report = make_report(dirs, options["out"])
        print(found_line(report))
        for note in mixed_notes(report.rows):
            print(f"note: {note}")
        print(markdown_table(report.rows))
        if options["logger"] == "wandb":
            log_to_wandb(report, options["wandb.project"], options["wandb.offline"])
    except UserError as err:
        fail(err)
    print(f"report: {report.out / 'report.md'}")


if __name__ == "__main__":
    main()
