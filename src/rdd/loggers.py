"""The run's Lightning loggers (conf/logger): built from the config, given the evaluation."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rdd.config import build


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = [build(node, "logger") for node in (cfg.get("logger") or {}).values() if node]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def report_to_loggers(loggers: list[Any], metrics: dict[str, float], grid: Path) -> None:
    for logger in loggers:
        adopt_csv_columns(logger)
        logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        if hasattr(logger, "log_image"):  # W&B: the synthetic images on the dashboard
            logger.log_image("synset", [str(grid)])
        logger.finalize("success")
        if hasattr(logger, "log_image"):
            # Close the W&B run: the next job of a multirun in this process gets its own run.
            logger.experiment.finish()


def adopt_csv_columns(logger: Any) -> None:
    """Make a CSV logger append to the columns its file already has.

    Under DDP the distillation rows are written by the spawned rank 0, whose logger's column
    list this (main) process never saw; without it Lightning would rewrite the file with the
    evaluation columns only and fail on the old rows.
    """
    if type(logger).__name__ != "CSVLogger":
        return
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as file:
        header = next(csv.reader(file), [])
    known = logger.experiment.metrics_keys
    known.extend(key for key in header if key not in known)
    known.sort()
