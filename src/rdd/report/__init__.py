"""`python -m rdd.report`: one table and a few plots from finished runs.

Reads every run directory (``config.yaml`` + ``metrics.json``) under the given directories,
groups runs by (dataset, method, ipc, risk), averages over seeds and writes ``report.md``,
``report.json`` and PNG plots; optionally logs them to W&B. The notebook
``notebooks/analysis.ipynb`` uses the same functions.

Modules: ``runs`` (finding and reading run directories), ``aggregate`` (groups and their
mean ± std), ``tables``, ``plots``, ``write`` (one report on disk and on W&B), ``__main__``
(the command line).
"""

from rdd.report.aggregate import (
    Row,
    aggregate,
    mixed_notes,
    mixed_settings,
    run_figures,
    std_kind,
    std_note,
)
from rdd.report.plots import (
    cluster_accuracy,
    cluster_groups,
    grid_groups,
    headline_details,
    plot_accuracy_vs_ipc,
    plot_cluster_bars,
    plot_grids,
)
from rdd.report.runs import Run, find_runs, load_run, scan_runs
from rdd.report.tables import arch_table, markdown_table, severity_table, table_columns
from rdd.report.write import Report, make_report, write_report

__all__ = [
    "Report",
    "Row",
    "Run",
    "aggregate",
    "arch_table",
    "cluster_accuracy",
    "cluster_groups",
    "find_runs",
    "grid_groups",
    "headline_details",
    "load_run",
    "make_report",
    "markdown_table",
    "mixed_notes",
    "mixed_settings",
    "plot_accuracy_vs_ipc",
    "plot_cluster_bars",
    "plot_grids",
    "run_figures",
    "scan_runs",
    "severity_table",
    "std_kind",
    "std_note",
    "table_columns",
    "write_report",
]
