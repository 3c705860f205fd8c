"""Checkpoints of a distillation run and their resumption (``checkpoint_every``, ``resume=``).

A checkpoint holds the learner's training state (:func:`training_state`) and what it was made
with (the resolved config without the keys a resumption may change, and the test partition's
digest); a resumed run must match both, so that it continues the same run bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from rdd.checkpoint.preemption import PreemptionCheckpoint
from rdd.checkpoint.resumable import (
    CONTINUED_NAME,
    CONTINUED_PREFIX,
    check_resumable,
    killed_run_overrides,
)
from rdd.config.compose import flatten
from rdd.config.errors import UserError
from rdd.distill.learner import SyntheticSetLearner
from rdd.outputs.loggers import IterationCSVLogger
from rdd.parallel.distributed import rank
from rdd.utils.io import atomic_write, tensor_digest, write_text

# 2: the real pool is a group table over all images (robust runs draw fresh real batches).
# 3: robust runs keep the owners of the synthetic images (rdd.robust.ownership).
CHECKPOINT_FORMAT = "rdd-checkpoint/3"


# Keys that may differ between a run and its resumption: where things go, how they are shown
# and on which devices (the result is bitwise equal on the same device type; see README).
VOLATILE_KEYS = ("paths", "hydra", "logger", "trainer", "resume", "checkpoint_every")


@dataclass
class Checkpoints:
    """Where a run checkpoints, how often, what it stores beside the state, and the state of
    a killed run to continue from (or None)."""

    path: Path
    every: int
    meta: dict[str, Any]
    resume_state: dict[str, Any] | None = None

    def attach(self, learner: SyntheticSetLearner, loggers: Sequence[Any] = ()) -> list[L.Callback]:
        """Continue ``learner`` from the resumed state, if any (and the CSV log from the killed
        run's rows); the callbacks that write the checkpoints (every ``every`` iterations at
        most, see :func:`checkpoint_cadence`, and when the run is preempted)."""
        if self.resume_state is not None:
            load_training_state(learner, self.resume_state)
            killed = Path(self.resume_state["source"]).parent
            for logger in loggers:
                if isinstance(logger, IterationCSVLogger):
                    logger.continue_from(killed, learner.start_iteration)
            if rank() == 0:
                print(
                    f"resumed at iteration {learner.start_iteration} of "
                    f"{learner.matcher.iterations} from {self.resume_state['source']}"
                )
        stop = PreemptionCheckpoint(self.path, self.meta, training_state, self.mark_continued)
        every = checkpoint_cadence(self.every, learner.matcher.iterations)
        if not every:
            return [stop]
        return [PeriodicCheckpoint(self.path, every, self.meta, self.mark_continued), stop]

    def finish(self) -> None:
        """The run has finished distilling: its set replaces the checkpoint."""
        self.path.unlink(missing_ok=True)
        self.mark_continued()

    def mark_continued(self) -> None:
        """Mark the resumed run as continued by this one (see CONTINUED_NAME); not a run
        resumed in its own directory, which stays resumable."""
        if self.resume_state is None:
            return
        killed = Path(self.resume_state["source"]).parent
        marker = killed / CONTINUED_NAME
        if not marker.exists() and killed.resolve() != self.path.parent.resolve():
            with contextlib.suppress(OSError):  # a read-only killed run stays as it was
                write_text(marker, f"{CONTINUED_PREFIX}{self.path.parent}\n")


# A run checkpoints at least this often per run: `make run` (6 DC iterations) under the default
# checkpoint_every=50 never wrote one, so a kill lost the whole run.
CHECKPOINTS_PER_RUN = 10


def checkpoint_cadence(every: int, iterations: int) -> int:
    """Iterations between checkpoints: ``checkpoint_every``, but at most a tenth of the run's
    iterations (at least 1), so that every run of two or more iterations can be resumed;
    0 (checkpoints off) stays 0."""
    if not every:
        return 0
    return max(1, min(every, iterations // CHECKPOINTS_PER_RUN))


class PeriodicCheckpoint(L.Callback):
    """Rank 0 writes the training state every ``every`` iterations, atomically (never after
    the last one: the finished set replaces the checkpoint)."""

    def __init__(
        self, path: Path, every: int, meta: dict[str, Any], written: Callable[[], None]
    ) -> None:
        self.path, self.every, self.meta, self.written = path, every, meta, written

    def on_train_batch_end(self, trainer, learner, outputs, batch, batch_idx: int) -> None:
        done = learner.iteration + 1
        if done % self.every or done >= learner.matcher.iterations or rank() != 0:
            return
        state = training_state(learner) | {"meta": self.meta}
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        self.written()


def training_state(learner: SyntheticSetLearner, next_iteration: int | None = None) -> dict:
    """Everything the run needs to continue after this iteration (or, taken at an
    iteration's start, from ``next_iteration``), as tensors and plain containers (it loads
    with ``torch.load(weights_only=True)``)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "next_iteration": learner.iteration + 1 if next_iteration is None else next_iteration,
        "images": learner.images.detach().cpu().clone(),
        "syn_lr": None if learner.syn_lr is None else learner.syn_lr.detach().cpu().clone(),
        "optimizers": [opt.state_dict() for opt in learner.optimizer_list()],
        "generator": learner.generator.get_state(),
        "robust_generator": learner.robust_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "risks": learner.risks.state(),
        "pool": learner.pool.state(),
        "ownership": None if learner.ownership is None else learner.ownership.state(),
        "discovery": dict(learner.discovery),
        "matcher": learner.matcher.state_dict(),
        "clusterer": clusterer_state(learner),
    }


def clusterer_state(learner: SyntheticSetLearner) -> dict | None:
    """The clusterer's buffers: a refit matches its clusters to the last fit's centroids, and
    ``features=style`` keeps the scaling of its first fit, so both are part of the run."""
    if learner.clusterer is None:
        return None
    return {
        key: value.detach().cpu().clone() for key, value in learner.clusterer.state_dict().items()
    }


def load_training_state(learner: SyntheticSetLearner, state: dict) -> None:
    """Continue ``learner`` from :func:`training_state` (before ``trainer.fit``)."""
    with torch.no_grad():
        learner.images.copy_(state["images"])
        if learner.syn_lr is not None:
            learner.syn_lr.copy_(state["syn_lr"])
    learner.generator.set_state(state["generator"])
    # Absent from checkpoints written before the robust layer had its own stream.
    if state.get("robust_generator") is not None:
        learner.robust_generator.set_state(state["robust_generator"])
    torch.set_rng_state(state["torch_rng"])
    learner.pool.load_state(state["pool"])
    # Absent from checkpoints written before refits matched their clusters: nothing to load.
    if learner.clusterer is not None and state.get("clusterer") is not None:
        learner.clusterer.load_state_dict(state["clusterer"])
    learner.risks.load_state(state["risks"])
    if learner.ownership is not None and state.get("ownership") is not None:
        learner.ownership.load_state(state["ownership"])
    learner.discovery = dict(state.get("discovery", {}))
    learner.start_iteration = learner.iteration = int(state["next_iteration"])
    # Applied in on_train_start: the optimizers and the device exist only then.
    learner.pending_optimizer_states = state["optimizers"]
    learner.pending_matcher_state = state["matcher"]


def run_identity(cfg: DictConfig) -> str:
    """The resolved config without the keys a resumption may change (VOLATILE_KEYS, and where
    the caches live)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        resolved.pop(key, None)
    for group, key in (("data", "cache_dir"), ("experts", "root")):
        (resolved.get(group) or {}).pop(key, None)
    return OmegaConf.to_yaml(OmegaConf.create(resolved), sort_keys=True)


def load_checkpoint(where: str, cfg: DictConfig, test_groups: torch.Tensor | None) -> dict:
    """The checkpoint of the killed run at ``where`` (its directory or the file), checked
    against this run's config and test partition. It holds only state that every DDP rank
    holds alike, so it resumes on any number of processes (trainer is a volatile key).

    Raises:
        UserError: no checkpoint to continue (rdd.checkpoint.resumable says why), an unreadable or
            foreign file, or a different config.
    """
    path = check_resumable(where)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...: torch raises many kinds
        raise UserError(
            f"cannot read the checkpoint '{path}' ({str(err).splitlines()[0][:150]}): it is "
            "damaged or not an rdd checkpoint; start the run again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"'{path}' is not an rdd checkpoint: give a run directory of rdd.run")
    meta, identity = state.get("meta", {}), run_identity(cfg)
    if meta.get("config") != identity:
        changed = config_differences(meta.get("config", ""), identity)
        started = " ".join(killed_run_overrides(path.parent)) or "no overrides"
        raise UserError(
            f"the checkpoint '{path}' was made with another config (differs in "
            f"{', '.join(changed[:5]) or 'its layout'}): the killed run was started with "
            f"'{started}'; give resume=<its directory> alone, or only volatile keys "
            f"({', '.join(VOLATILE_KEYS[:4])}) besides"
        )
    if meta.get("test_partition") != tensor_digest(test_groups):
        raise UserError(
            f"the test partition differs from the one of the checkpoint '{path}' (the test "
            "set or eval.partition changed): resume with the same data and eval settings"
        )
    return state | {"source": str(path)}


def config_differences(old: str, new: str) -> list[str]:
    """Dotted keys whose values differ between two YAML configs."""
    flat_old = flatten(OmegaConf.to_container(OmegaConf.create(old or "{}")))
    flat_new = flatten(OmegaConf.to_container(OmegaConf.create(new)))
    return sorted(
        k for k in flat_old.keys() | flat_new.keys() if flat_old.get(k) != flat_new.get(k)
    )
