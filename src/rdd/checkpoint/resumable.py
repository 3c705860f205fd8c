"""Which directories ``resume=<dir>`` can continue, and for every other one line that says why
not and what to do instead.

A run directory of ``python -m rdd.run`` can be continued while it holds a ``checkpoint.pt``
that no later run has continued. Refused, each with its own fix: a path that does not exist, a
directory that is not a run of rdd.run, a run that finished (its checkpoint is gone), a run
stopped before its first checkpoint, and a run already continued by another one (resuming it
again would start a second, duplicate continuation). Checked before Hydra starts (rdd.config.cli) and
again where the checkpoint is loaded (rdd.checkpoint.state), so nothing is written or computed first.
Light on imports: rdd.config.cli imports it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rdd.config.compose import FINISHED_MARKERS
from rdd.config.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"
# Written into a killed run's directory once a run that resumed it has a checkpoint of its own
# or has finished: resume=auto (rdd.checkpoint.resume) then no longer picks the killed run, and
# resume=<that dir> is refused.
CONTINUED_NAME = "CONTINUED.txt"
CONTINUED_PREFIX = "continued in "
# Where the run directories of rdd.run are (conf/hydra/default.yaml), for the messages.
RUNS_HINT = "<log dir>/distill/runs/<time>"


def check_resumable(where: str | Path) -> Path:
    """The checkpoint file ``resume=<where>`` names (a run directory, or the file itself).

    Raises:
        UserError: ``where`` cannot be continued; the message says why and what to do.
    """
    path = Path(where)
    if not path.exists():
        raise UserError(
            f"resume: '{where}' does not exist: give the directory of a stopped run "
            f"({RUNS_HINT}), or resume=auto for the newest one of the same config"
        )
    run_dir = path if path.is_dir() else path.parent
    continuation = continued_by(run_dir)
    if continuation is not None:
        raise UserError(already_continued(run_dir, continuation))
    checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
    if checkpoint.is_file():
        return checkpoint  # whether it is an rdd checkpoint of this config: load_checkpoint
    if any((run_dir / name).exists() for name in FINISHED_MARKERS):
        raise UserError(
            f"resume: the run in '{run_dir}' has finished distilling (it holds its final set "
            f"and no {CHECKPOINT_NAME}): there is nothing to resume; score its set with "
            f"python -m rdd.evaluate synset={run_dir}, or start a new run without resume="
        )
    if not is_run_of_rdd_run(run_dir):
        raise UserError(
            f"resume: '{run_dir}' is not a run directory of python -m rdd.run (no "
            f"{CHECKPOINT_NAME}, no .hydra/config.yaml of rdd.run): give the directory of a "
            f"stopped run ({RUNS_HINT}), or resume=auto"
        )
    raise UserError(never_checkpointed(run_dir))


def continued_by(run_dir: Path) -> str | None:
    """The run that continued ``run_dir``, as its CONTINUED.txt names it; None if none did."""
    marker = run_dir / CONTINUED_NAME
    if not marker.is_file():
        return None
    return marker.read_text().strip().removeprefix(CONTINUED_PREFIX) or "another run"


def already_continued(run_dir: Path, continuation: str) -> str:
    """Why a continued run is refused, what to do given where its continuation stands, and
    how to branch a second continuation on purpose."""
    marker = run_dir / CONTINUED_NAME
    head = (
        f"resume: the run in '{run_dir}' was already continued by '{continuation}'; resuming "
        "it again would start a duplicate continuation:"
    )
    on_purpose = f"(to branch a second one on purpose, delete {marker})"
    later = Path(continuation)
    if (later / CHECKPOINT_NAME).is_file():
        return f"{head} continue that run instead, resume={later} {on_purpose}"
    if any((later / name).exists() for name in FINISHED_MARKERS):
        return f"{head} that run has finished, its set is in {later} {on_purpose}"
    return f"{head} resume=auto continues the newest run of this config {on_purpose}"


def never_checkpointed(run_dir: Path) -> str:
    """Why a run stopped before its first checkpoint cannot be continued, and the command
    that starts it again (checkpoints switched on, if it ran without)."""
    overrides = started_with(run_dir)
    if (run_config(run_dir) or {}).get("checkpoint_every"):
        why, extra = "it stopped before its first checkpoint", []
    else:
        why, extra = "it ran with checkpoint_every=0 (no checkpoints)", ["checkpoint_every=50"]
        overrides = [o for o in overrides if not o.startswith("checkpoint_every=")]
    command = " ".join(["python -m rdd.run", *overrides, *extra])
    return (
        f"resume: the run in '{run_dir}' has no {CHECKPOINT_NAME}: {why}, so there is nothing "
        f"to resume; start it again: {command}"
    )


def started_with(run_dir: Path) -> list[str]:
    """The overrides to start ``run_dir``'s run again (not where it went, nor resume)."""
    return [
        o
        for o in killed_run_overrides(run_dir)
        if not o.lstrip("+~").startswith(("hydra.", "resume="))
    ]


def is_run_of_rdd_run(run_dir: Path) -> bool:
    """Whether Hydra's record of ``run_dir`` is rdd.run's config (the only one with resume)."""
    config = run_config(run_dir)
    return config is not None and "resume" in config


def run_config(run_dir: Path) -> dict | None:
    """The composed config Hydra recorded for ``run_dir`` (None without a readable one)."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    except (OSError, ValueError, OmegaConfBaseException):
        return None
    return config if isinstance(config, dict) else None


def killed_run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides a run was started with (Hydra's .hydra/overrides.yaml)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path))
    except (OSError, ValueError, OmegaConfBaseException):
        return []  # no Hydra record: the command line must then give the overrides itself
    return [str(o) for o in overrides] if isinstance(overrides, list) else []
