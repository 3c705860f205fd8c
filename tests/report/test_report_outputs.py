"""What rdd.report's plots and notes show (a colour per line, error bars named), its W&B
logging, and the sweep-end table's failure path (its success: the real multirun in
test_report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from omegaconf import OmegaConf

from rdd.report import (
    aggregate,
    find_runs,
    plot_accuracy_vs_ipc,
    plot_cluster_bars,
    std_kind,
    std_note,
)
from rdd.report.sweep import WriteSweepTable
from tests.conftest import run_module
from tests.report.test_report import build_sweep, expected_table


def test_every_line_and_bar_has_its_own_colour_and_says_what_its_error_bars_are(
    tmp_path,
) -> None:
    runs = find_runs([build_sweep(tmp_path / "sweep")])
    [ax] = plot_accuracy_vs_ipc(aggregate(runs)).axes
    colours = {c.get_label(): c.lines[0].get_color() for c in ax.containers}
    assert colours.keys() == {"dsa", "dsa + cvar", "random"}  # lines with error bars
    assert len(set(colours.values())) == 3  # base and robust dsa differ too
    title = ax.get_legend().get_title().get_text()
    assert title == "error bars: std over seeds (over evaluation networks where there is one seed)"
    [ax] = plot_cluster_bars(runs, "digits", "dsa", 10).axes
    bars = {
        c.get_label(): c.patches[0].get_facecolor()
        for c in ax.containers
        if isinstance(c, BarContainer)
    }
    assert bars.keys() == {"base (3 seeds)", "cvar (2 seeds)"}
    assert len(set(bars.values())) == 2
    assert ax.get_legend().get_title().get_text() == "error bars: std over seeds"


def test_the_cluster_legend_covers_no_bar(tmp_path) -> None:
    runs = find_runs([build_sweep(tmp_path / "sweep")])
    fig = plot_cluster_bars(runs, "digits", "dsa", 10)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # lays the figure out (constrained layout) as savefig does
    [ax] = fig.axes
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for c in ax.containers for p in getattr(c, "patches", [])]
    assert bars and not any(legend.overlaps(bar) for bar in bars)
    assert not legend.overlaps(ax.get_window_extent(renderer))  # beside the plot, on nothing
    assert fig.bbox.contains(legend.x1 - 1, legend.y1 - 1)  # and not cut off


def test_std_kind_names_runs_that_share_a_seed() -> None:
    assert std_kind([(3, 3), (2, 2)]) == "std over seeds"
    assert std_kind([(1, 1)]) == "std over evaluation networks (one seed)"
    assert std_kind([(2, 1)]) == "std over runs, some sharing a seed"
    assert std_kind([(3, 3), (2, 1), (1, 1)]) == (
        "std over seeds (over runs where runs share a seed; over evaluation networks where "
        "there is one seed)"
    )


def test_the_table_note_names_the_std_of_its_rows(tmp_path) -> None:
    rows = aggregate(find_runs([build_sweep(tmp_path / "sweep")]))
    assert [row.n for row in rows] == [1, 3, 2, 1, 1]
    assert std_note(rows[1:3]).startswith("± is the std over seeds;")
    assert std_note(rows[:1]).startswith("± is the std over evaluation networks (one seed);")


def test_a_sweep_whose_table_cannot_be_written_still_ends_quietly(tmp_path, capsys) -> None:
    (tmp_path / "0").mkdir()  # a job that never finished
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    WriteSweepTable().on_multirun_end(config)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep table (no finished runs" in err
    assert f"python -m rdd.report {tmp_path}" in err and not (tmp_path / "report").exists()


def test_wandb_offline_logs_the_table_and_plots(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    sweep = build_sweep(tmp_path / "sweep")
    out = tmp_path / "out"
    result = run_module(
        "rdd.report",
        str(sweep),
        f"out={out}",
        "logger=wandb",
        "logger.wandb.offline=true",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = (out / "wandb").glob("offline-run-*")
    [table_file] = (run_dir / "files" / "media" / "table").glob("report_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:6] == ["dataset", "method", "ipc", "risk", "seeds", "clean"]
    expected = expected_table()
    assert [row[:5] for row in table["data"]] == [row[:4] + [int(row[4])] for row in expected]
    dsa = table["data"][1]
    assert dsa[5] == pytest.approx(52.0) and dsa[6] == pytest.approx(np.std([50, 52, 54]))
    images = {p.name.split("_")[0] for p in (run_dir / "files" / "media" / "images").glob("*.png")}
    assert images == {"acc", "clusters", "grids"}


@pytest.mark.parametrize(
    ("ipc", "title"), [(1, "digits, 1 image per class"), (10, "digits, 10 images per class")]
)
def test_the_grid_figure_counts_images_in_words_that_agree(ipc, title) -> None:
    from rdd.report.plots import plot_grids

    assert plot_grids([], "digits", ipc).get_suptitle() == title
