"""Which checkpoint a run continues: ``resume=<dir>``, or ``resume=auto``.

``resume=auto`` continues the newest resumable run of the same config (rdd.checkpoint.state's
``run_identity``) under ``paths.log_dir``: a run directory holding a ``checkpoint.pt`` that no
later run has continued (``CONTINUED.txt``). Under SLURM it looks only at the run directories
recorded for ``$SLURM_JOB_ID`` (``<log dir>/slurm/<job id>.txt``, one line per run started in
that job; a requeued job keeps its id), so the same command continues after a requeue and
never picks up another job's checkpoint. Nothing to continue: the run starts afresh, with a
one-line note.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from rdd.checkpoint.resumable import CHECKPOINT_NAME, CONTINUED_NAME
from rdd.checkpoint.state import Checkpoints, load_checkpoint, run_identity
from rdd.parallel.distributed import rank
from rdd.utils.io import tensor_digest

log = logging.getLogger("rdd.run")

AUTO = "auto"


def run_checkpoints(
    cfg: DictConfig, out_dir: Path, test_groups: torch.Tensor | None
) -> Checkpoints:
    """Where this run checkpoints, and the checked state it continues (``resume``), if any.

    Under SLURM the run directory is recorded for its job first (for ``resume=auto``).
    """
    record_slurm_run(cfg, out_dir)
    source = resume_source(cfg, out_dir)
    return Checkpoints(
        out_dir / CHECKPOINT_NAME,
        int(cfg.get("checkpoint_every") or 0),
        {"config": run_identity(cfg), "test_partition": tensor_digest(test_groups)},
        load_checkpoint(source, cfg, test_groups) if source else None,
    )


def resume_source(cfg: DictConfig, out_dir: Path) -> str | None:
    """The run directory (or checkpoint file) to continue: ``resume``, or auto's pick."""
    where = cfg.get("resume")
    if where is None or str(where) != AUTO:
        return None if where is None else str(where)
    found = newest_resumable(cfg, out_dir)
    where_looked = slurm_record(cfg) if slurm_job() else Path(cfg.paths.log_dir)
    if found is None:
        log.info(
            "resume=auto: no resumable run of this config in %s; starting afresh", where_looked
        )
        return None
    log.info("resume=auto: continuing %s", found)
    return str(found)


def newest_resumable(cfg: DictConfig, out_dir: Path) -> Path | None:
    """The newest run directory whose checkpoint was made with this config and that no later
    run continued; None if there is none."""
    identity = run_identity(cfg)
    for path in candidates(cfg):
        run_dir = path.parent
        if run_dir.resolve() == out_dir.resolve() or (run_dir / CONTINUED_NAME).exists():
            continue
        if checkpoint_identity(path) == identity:
            return run_dir
    return None


def candidates(cfg: DictConfig) -> list[Path]:
    """Checkpoints to consider, newest first: the job's recorded runs under SLURM, else every
    checkpoint under the log directory."""
    if slurm_job():
        record = slurm_record(cfg)
        runs = record.read_text().split("\n") if record.is_file() else []
        paths = [Path(run) / CHECKPOINT_NAME for run in reversed(runs) if run]
        return [p for p in paths if p.is_file()]
    found = Path(cfg.paths.log_dir).glob(f"**/{CHECKPOINT_NAME}")
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)


def checkpoint_identity(path: Path) -> str | None:
    """The config identity a checkpoint records (read lazily: tensors are memory-mapped)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # damaged or foreign: not resumable
        return None
    meta = state.get("meta") if isinstance(state, dict) else None
    return meta.get("config") if isinstance(meta, dict) else None


def slurm_job() -> str | None:
    """This SLURM job's id (Lightning's reading of the environment; None outside SLURM)."""
    job = SLURMEnvironment.job_id()
    return None if job is None else str(job)


def slurm_record(cfg: DictConfig) -> Path:
    return Path(cfg.paths.log_dir) / "slurm" / f"{slurm_job()}.txt"


def record_slurm_run(cfg: DictConfig, out_dir: Path) -> None:
    """Under SLURM, append this run's directory to its job's record."""
    if slurm_job() is None or rank() != 0:
        return
    record = slurm_record(cfg)
    record.parent.mkdir(parents=True, exist_ok=True)
    with record.open("a") as lines:  # appended, like a log: one line per run
        lines.write(f"{out_dir.resolve()}\n")
