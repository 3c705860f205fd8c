"""IterationCSVLogger (logger=csv): one named row per iteration, continued on resume."""

from __future__ import annotations

import csv

import pytest
from lightning.pytorch.utilities import rank_zero_only

from rdd.outputs.loggers import IterationCSVLogger


def rows_of(logger: IterationCSVLogger) -> tuple[list[str], list[dict[str, str]]]:
    with logger.path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames), list(reader)


def log_steps(logger: IterationCSVLogger, steps: range, extra_from: int | None = None) -> None:
    for step in steps:
        metrics = {"train/match_loss": 10.0 - step, "epoch": 0, "risk/value": 2.0 * step}
        if extra_from is not None and step >= extra_from:
            metrics["cluster/size_min"] = 3.0
        logger.log_metrics(metrics, step=step)
    logger.finalize("success")


def test_one_row_per_iteration_with_named_columns(tmp_path) -> None:
    logger = IterationCSVLogger(tmp_path)
    logger.log_metrics({"train/match_loss": 5.0, "epoch": 0}, step=0)
    logger.log_metrics({"risk/value": 7.0}, step=0)  # a second call for the same step merges
    log_steps(logger, range(1, 4), extra_from=2)  # a key first logged late widens the header
    header, rows = rows_of(logger)
    assert logger.path == tmp_path / "csv" / "metrics.csv"
    assert header == ["iteration", "seconds", "train/match_loss", "cluster/size_min", "risk/value"]
    assert [r["iteration"] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0]["train/match_loss"] == "5.0" and rows[0]["risk/value"] == "7.0"
    assert [r["cluster/size_min"] for r in rows] == ["", "", "3.0", "3.0"]
    assert all(float(r["seconds"]) >= 0 for r in rows)


def test_a_resumed_run_continues_the_file(tmp_path) -> None:
    log_steps(IterationCSVLogger(tmp_path), range(5))  # killed after iteration 4
    # The checkpoint was at iteration 3: the resumed run redoes 3 and 4, then goes on.
    log_steps(IterationCSVLogger(tmp_path), range(3, 7), extra_from=6)
    header, rows = rows_of(IterationCSVLogger(tmp_path))
    assert [r["iteration"] for r in rows] == [str(i) for i in range(7)]
    assert "cluster/size_min" in header and rows[6]["cluster/size_min"] == "3.0"
    assert rows[4]["train/match_loss"] == "6.0"


def test_evaluation_figures_without_a_step_are_not_rows(tmp_path) -> None:
    logger = IterationCSVLogger(tmp_path)
    log_steps(logger, range(2))
    logger.log_metrics({"eval/test_acc": 50.0})
    logger.finalize("success")
    header, rows = rows_of(logger)
    assert len(rows) == 2 and "eval/test_acc" not in header


def test_only_rank_zero_writes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    log_steps(IterationCSVLogger(tmp_path), range(2))
    assert not (tmp_path / "csv").exists()


def test_each_row_is_on_disk_as_soon_as_its_iteration_is_logged(tmp_path) -> None:
    """A run killed (SIGKILL) during iteration 2 keeps the rows of iterations 0 and 1: no
    finalize, no later step flushes them."""
    logger = IterationCSVLogger(tmp_path)
    for step in range(2):
        logger.log_metrics({"train/match_loss": 10.0 - step}, step=step)
    _, rows = rows_of(IterationCSVLogger(tmp_path))
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert rows[1]["train/match_loss"] == "9.0"


def test_a_run_resumed_in_a_new_directory_starts_from_the_killed_runs_rows(tmp_path) -> None:
    """The killed run logged 0..4, its checkpoint is at 3: the continuation's file holds the
    killed run's rows 0..2, then its own from 3 on (the redone 3 and 4 replace the killed ones)."""
    killed = IterationCSVLogger(tmp_path / "killed")
    for step in range(5):
        killed.log_metrics({"train/match_loss": 10.0 - step, "risk/value": 1.0}, step=step)
    resumed = IterationCSVLogger(tmp_path / "resumed")
    resumed.continue_from(tmp_path / "killed", 3)
    for step in range(3, 6):
        resumed.log_metrics({"train/match_loss": 100.0 + step, "risk/value": 1.0}, step=step)
    header, rows = rows_of(resumed)
    _, killed_rows = rows_of(killed)
    assert [r["iteration"] for r in rows] == [str(i) for i in range(6)]
    assert rows[:3] == killed_rows[:3]
    assert [r["train/match_loss"] for r in rows[3:]] == ["103.0", "104.0", "105.0"]
    assert header == ["iteration", "seconds", "train/match_loss", "risk/value"]


def test_a_run_resumed_in_its_own_directory_keeps_continuing_its_file(tmp_path) -> None:
    log_steps(IterationCSVLogger(tmp_path), range(4))
    again = IterationCSVLogger(tmp_path)
    again.continue_from(tmp_path, 2)  # the same file: left to the continuation of the file
    log_steps(again, range(2, 5))
    _, rows = rows_of(again)
    assert [r["iteration"] for r in rows] == [str(i) for i in range(5)]
