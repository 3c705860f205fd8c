"""IterationCSVLogger (logger=csv): one named row per iteration, continued on resume."""

from __future__ import annotations

import csv

import pytest
from lightning.pytorch.utilities import rank_zero_only

from rdd.loggers import IterationCSVLogger


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
