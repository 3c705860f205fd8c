"""The run's Lightning loggers (conf/logger): built from the config, given the evaluation.

``logger=csv`` is :class:`IterationCSVLogger`: ``<run dir>/csv/metrics.csv`` with one row per
distillation iteration and named columns (``iteration``, ``seconds``, ``train/match_loss``,
then the risk, subgroup and cluster figures when the run logs them). The evaluation figures
are not repeated there: they are in metrics.json.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rdd.config.compose import build
from rdd.utils.io import atomic_write

log = logging.getLogger(__name__)

# The first columns, in this order; every other logged key follows, sorted.
LEADING = ["iteration", "seconds", "train/match_loss"]
# Lightning adds the epoch to every row; a distillation is one "epoch" of iterations.
DROPPED = {"epoch"}


class IterationCSVLogger(Logger):
    """One CSV row per iteration, written as soon as Lightning logs the iteration (a killed
    run keeps the row of every iteration it finished).

    The header is the union of the keys logged so far; a key first logged late (a cluster
    refit), or a second call for the same step, rewrites the file once. An existing file is
    continued, not replaced: a resumed run keeps the rows of the iterations it does not redo,
    and one that continues in a new directory starts from the killed run's rows
    (:meth:`continue_from`). Only rank 0 writes (Lightning's ``rank_zero_only``).

    Args:
        save_dir: the run directory; the file is ``<save_dir>/<name>/metrics.csv``.
        name: the folder inside ``save_dir``.
    """

    def __init__(self, save_dir: str | Path, name: str = "csv") -> None:
        super().__init__()
        self._save_dir, self._name = str(save_dir), name
        self._row: dict[str, float] = {}
        self._step: int | None = None
        self._written = False  # whether the file already holds a row for self._step
        self._columns: list[str] | None = None  # None: the file was not read yet
        self._clock = self._ended = time.time()

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return str(Path(self._save_dir) / self._name)

    @property
    def path(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass  # the resolved config is the run's config.yaml

    @rank_zero_only
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this once as training starts: time the first iteration from here.
        self._clock = time.time()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is None:  # not an iteration's figures (rdd.run keeps evaluation out of here)
            return
        if step != self._step:  # a new row, timed from the end of the last one
            self._clock = self._ended if self._step is not None else self._clock
            self._row, self._step, self._written = {}, step, False
        self._ended = time.time()  # Lightning logs a step as it ends
        self._row |= {k: float(v) for k, v in metrics.items() if k not in DROPPED}
        self._write_row()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        pass  # every row is on disk as soon as it is logged

    @rank_zero_only
    def continue_from(self, run_dir: str | Path, first: int) -> None:
        """Start this run's file from the rows the killed run in ``run_dir`` logged before
        iteration ``first`` (where this run resumes), unless this run already has a file (a
        run resumed in its own directory continues it)."""
        killed = Path(run_dir) / self._name / "metrics.csv"
        if self.path.exists() or not killed.is_file():
            return
        header, rows = read_rows(killed)
        self._rewrite(header, [r for r in rows if _iteration(r) < first])

    def _write_row(self) -> None:
        """The current step's row: appended, or the file rewritten when the row widens the
        header or replaces the step's row written by an earlier call."""
        row = {"iteration": self._step, "seconds": round(self._ended - self._clock, 4)}
        row |= self._row
        if self._columns is None:
            self._continue_file(int(row["iteration"]))
        new = [key for key in row if key not in self._columns]
        if new or self._written:
            rows = read_rows(self.path)[1]
            earlier = rows[:-1] if self._written else rows
            self._rewrite(ordered([*self._columns, *new]), [*earlier, row])
        else:
            with self.path.open("a", newline="") as file:
                csv.DictWriter(file, self._columns).writerow(row)
        self._written = True

    def _continue_file(self, first: int) -> None:
        """Adopt an existing file's columns, dropping the rows of iterations from ``first`` on
        (a resumed run redoes the iterations after its checkpoint)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header, rows = read_rows(self.path)
        kept = [r for r in rows if _iteration(r) < first]
        self._columns = header
        if len(kept) < len(rows) or not header:
            self._rewrite(header, kept)

    def _rewrite(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        self._columns = columns

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as file:
                writer = csv.DictWriter(file, columns)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.path, write)


def ordered(columns: list[str]) -> list[str]:
    return [c for c in LEADING if c in columns] + sorted(c for c in columns if c not in LEADING)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; ([], []) when there is none."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def _iteration(row: dict[str, str]) -> float:
    """A row's iteration; a row without one (another format) counts as before every other."""
    try:
        return float(row.get("iteration") or "-inf")
    except ValueError:
        return float("-inf")


class ProgressLog(L.Callback):
    """A line to the run's log (run.log and the console) about every tenth of the
    distillation and at its end: iteration, matching loss, seconds per iteration.

    Args:
        lines: about how many lines a whole distillation gets.
    """

    def __init__(self, lines: int = 10) -> None:
        self.lines = lines
        self.started, self.first = time.perf_counter(), None

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.started, self.first = time.perf_counter(), None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if trainer.global_rank != 0:
            return
        done, total = pl_module.iteration + 1, pl_module.matcher.iterations
        self.first = done - 1 if self.first is None else self.first  # a resumed run starts late
        every = max(1, total // self.lines)
        if done % every and done != total:
            return
        loss = trainer.callback_metrics.get("train/match_loss")
        rate = (time.perf_counter() - self.started) / max(done - self.first, 1)
        log.info(
            "distill: iteration %d/%d, matching loss %s, %.2f s/iteration",
            done,
            total,
            "–" if loss is None else f"{float(loss):.4g}",
            rate,
        )


def log_group_losses(loggers: list[Any], group_losses: list[Any]) -> None:
    """With W&B, a histogram of this iteration's per-subgroup matching losses (tensors)."""
    if not group_losses:
        return
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import torch
            import wandb

            values = torch.cat(group_losses).cpu().numpy()
            logger.experiment.log({"risk/group_losses": wandb.Histogram(values)}, commit=False)


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = [build(node, "logger") for node in (cfg.get("logger") or {}).values() if node]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def report_to_loggers(loggers: list[Any], metrics: dict[str, float], grid: Path) -> None:
    for logger in loggers:
        if not isinstance(logger, IterationCSVLogger):  # its file holds iterations only
            logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        if hasattr(logger, "log_image"):  # W&B: the synthetic images on the dashboard
            logger.log_image("synset", [str(grid)])
        logger.finalize("success")
        if hasattr(logger, "log_image"):
            # Close the W&B run: the next job of a multirun in this process gets its own run.
            logger.experiment.finish()
