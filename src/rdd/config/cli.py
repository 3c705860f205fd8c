"""Command-line plumbing shared by the entry points: early checks and one-line errors."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from rdd.checkpoint.resumable import check_resumable, killed_run_overrides
from rdd.config.compose import CONF_DIR, check_fresh, check_writable, explain, first_line
from rdd.config.errors import Interrupted, UserError
from rdd.config.help import register_help_resolver
from rdd.parallel.launch import is_launched_rank0, launcher_overrides

# Written into a failed run's directory when it holds outputs worth keeping.
FAILED_NAME = "FAILED.txt"

# Groups whose options are files in conf/<group>/; checked before Hydra starts so that a typo
# gives one line instead of Hydra's multi-line report.
CHECKED_GROUPS = (
    "data",
    "net",
    "matching",
    "clustering",
    "risk",
    "experts",
    "eval",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "hparams_search",
    "debug",
)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_overrides(argv: Sequence[str]) -> None:
    """Reject unknown group options (``matching=foo``) and a non-positive ``ipc``.

    Sweep values (``matching=dc,dsa``) are checked one by one. With more configs on Hydra's
    search path (``hydra.searchpath=``, ``--config-dir``) options may live there: Hydra then
    checks the names itself.
    """
    extended = any(a.lstrip("+~").startswith("hydra.searchpath") for a in argv)
    extended |= any(a.split("=")[0] in ("--config-dir", "-cd") for a in argv)
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if "(" in value or "[" in value:  # sweep functions such as range(...): leave to Hydra
            continue
        for item in value.split(","):
            if (
                key in CHECKED_GROUPS
                and not extended
                and item not in ("null", "")
                and item not in group_options(key)
            ):
                raise UserError(
                    f"unknown {key} '{item}': choose one of {', '.join(group_options(key))} "
                    f"(e.g. {key}={group_options(key)[0]})"
                )
            if key == "ipc":
                check_ipc(item)


def check_ipc(value: object) -> int:
    """ipc must be a positive integer."""
    try:
        ipc = int(str(value))
    except ValueError:
        ipc = 0
    if ipc <= 0 or str(ipc) != str(value).strip():
        raise UserError(
            f"ipc must be a positive integer (images per class), got '{value}': set e.g. ipc=10"
        )
    return ipc


def fail(
    err: Exception, job_dir: Path | None = None, alike_on_every_rank: bool = False
) -> NoReturn:
    """Print a user error (exit status 2) or an interruption (128 + its signal: Ctrl-C 130,
    SIGTERM 143, SIGUSR1 138) as one line.

    ``job_dir``: the failed job's run directory, cleaned up first (:func:`discard_failed_run`)
    so that a failed command leaves nothing that looks like a run.
    ``alike_on_every_rank``: every rank of a torchrun/srun launch finds this error (a check of
    the command line or config).
    """
    interrupted = isinstance(err, Interrupted)
    # Under a launcher rank 0 speaks for the ranks when they all meet the same error, and when
    # one is stopped before it kept anything (the launcher stops the others when one fails).
    if not is_launched_rank0() and (alike_on_every_rank or (interrupted and not str(err))):
        # The ranks share the run directory: this rank made it again if it came after rank 0
        # had removed it; an empty one is removed, one rank 0 is writing into is not empty.
        with contextlib.suppress(OSError):
            if job_dir is not None:
                job_dir.rmdir()
        sys.exit(err.exit_status if interrupted else 2)
    message = f"{err.label}: {err or 'nothing was kept'}" if interrupted else f"error: {err}"
    if job_dir is not None:
        discard_failed_run(job_dir, message)
    close_progress_bars()
    print(message, file=sys.stderr)
    sys.exit(err.exit_status if interrupted else 2)


def close_progress_bars() -> None:
    """Close the tqdm bars a stopped command left open, inner ones first, so that its one
    line starts a line of its own: an open bar leaves the cursor after its text (or, an
    inner one, a line up), where the line would otherwise be glued."""
    for bar in sorted(tqdm._instances, key=lambda bar: -abs(bar.pos)):
        bar.close()
    sys.stdout.flush()  # Lightning's bar writes to stdout, the line goes to stderr


def fail_job(err: Exception, alike_on_every_rank: bool = False) -> NoReturn:
    """:func:`fail` from inside a Hydra job (an entry point's main), cleaning up its directory."""
    fail(err, Path(HydraConfig.get().runtime.output_dir), alike_on_every_rank)


# What Hydra and the loggers put into a run directory before rdd writes any output of its own
# (with Hydra's job log, <command>.log).
SCAFFOLDING = (".hydra", "multirun.yaml", "csv", "wandb")


def discard_failed_run(out_dir: Path, message: str) -> None:
    """A failed command's run directory: removed when it holds only scaffolding (Hydra's
    files, empty logs, logger folders), so failures do not pile up among real runs; kept
    with a FAILED.txt that holds the error when it holds outputs (a stopped run's last good
    set, the metrics of an interrupted evaluation, a checkpoint to resume from)."""
    if not out_dir.is_dir():
        return
    entries = list(out_dir.iterdir())
    if any(p.name not in SCAFFOLDING and p.suffix != ".log" for p in entries):
        # An unwritable directory gets no marker: the error line is still printed.
        with contextlib.suppress(OSError):
            (out_dir / FAILED_NAME).write_text(message + "\n")
        return
    for path in entries:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out_dir.rmdir()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # Ctrl-C, SLURM, `timeout`


def raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum=signum)


def run_cli(hydra_main: Callable[[], object]) -> None:
    """Hand the command line to a @hydra.main function, which composes it (once), with its
    composition errors as one line instead of Hydra's report.

    Before Hydra starts: unknown group options, ``ipc``, and an explicit output directory
    that already holds a run or cannot be written (Hydra would write into it first).
    A sweep's every value is composed by Hydra's sweeper before its first job runs.
    """
    argv = sys.argv[1:]
    multirun = bool({"-m", "--multirun"} & set(argv))
    # A search (conf/hparams_search) sets hydra.mode=MULTIRUN itself.
    multirun |= any(a.startswith("hparams_search=") and a != "hparams_search=null" for a in argv)
    try:
        # rdd.run's resume=<dir> alone continues the killed run with the overrides it was
        # given; under torchrun/srun the ranks share one run directory (rdd.parallel.launch).
        sys.argv[1:] = argv = launcher_overrides(with_resumed_overrides(argv))
        check_overrides(argv)
        out_dir = requested_out_dir(argv, multirun)
        if out_dir is not None:
            check_fresh(out_dir, multirun)
            check_writable(out_dir)
    except UserError as err:
        fail(err, alike_on_every_rank=True)
    existed = out_dir is not None and out_dir.exists()
    register_help_resolver()  # --help's group list (conf/hydra/default.yaml)
    RememberSweepDir.path = None
    # Ctrl-C, SIGTERM, SIGUSR1 raise Interrupted: one line saying what was kept (Lightning: exit 1
    # or 0). A distillation defers them to a safe point (rdd.checkpoint.preemption).
    main_thread = threading.current_thread() is threading.main_thread()
    previous_handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    if main_thread:
        for signum in STOP_SIGNALS:
            signal.signal(signum, raise_interrupted)
    # Hydra then raises its errors instead of printing them over several lines.
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except COMPOSITION_ERRORS as err:
        # A sweep writes multirun.yaml before it composes its jobs.
        error = UserError(composition_message(err))
        if RememberSweepDir.path is not None and not existed:
            discard_failed_run(RememberSweepDir.path, f"error: {error}")
        fail(error)
    except PermissionError as err:
        fail(UserError(f"cannot write to '{err.filename}': choose a writable hydra.run.dir"))
    except Interrupted as err:  # Ctrl-C outside a job (while Hydra composes or starts)
        fail(err)
    finally:
        restore_env("HYDRA_FULL_ERROR", previous)
        if main_thread:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)


def with_resumed_overrides(argv: list[str]) -> list[str]:
    """``resume=<dir>`` alone continues the killed run as it was started: the overrides in
    its ``.hydra/overrides.yaml`` are added before the command line's own (which win, so a
    volatile key such as ``trainer`` may still change; any other change is refused by
    :func:`rdd.checkpoint.state.load_checkpoint`). Where it goes (``hydra.*``) and ``resume`` are not re-applied."""
    where = next((a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == "resume"), None)
    if not where or where in ("null", "auto"):  # auto: rdd.checkpoint.resume finds the run itself
        return argv
    run_dir = check_resumable(where).parent  # a directory it cannot continue: one line, now
    given = {override_key(a) for a in argv if "=" in a and not a.startswith("-")}
    added = [
        o
        for o in killed_run_overrides(run_dir)
        if override_key(o) not in given | {"resume"} and not override_key(o).startswith("hydra.")
    ]
    if added:
        print(f"resume: re-applying the killed run's overrides: {' '.join(added)}")
    return added + argv


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def composition_message(err: Exception) -> str:
    if isinstance(err, OverrideParseException):
        return f"cannot parse the command line: {first_line(err)}"
    return explain(err)


# What Hydra raises when the command line does not compose (with HYDRA_FULL_ERROR set).
COMPOSITION_ERRORS = (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
    OmegaConfBaseException,
)


def requested_out_dir(argv: Sequence[str], multirun: bool) -> Path | None:
    """The output directory the command line names (``hydra.run.dir=`` or, for a sweep,
    ``hydra.sweep.dir=``), when it is a plain path; None otherwise (Hydra's default is a
    fresh, time-stamped directory)."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").split("=", 1)[0] == key]
    if not values or "${" in values[-1]:
        return None
    return Path(values[-1].strip("'\""))


class RememberSweepDir(Callback):
    """Hydra callback (conf/hydra/default.yaml): the directory of the sweep starting now."""

    path: Path | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        RememberSweepDir.path = Path(config.hydra.sweep.dir)


def quiet_lightning() -> None:
    """Drop Lightning's per-Trainer banners and hints: we build one Trainer per evaluated net."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*LeafSpec.*",
        ".*number of training batches.*",
        ".*GPU available but not used.*",
        ".*no .val_dataloader.*",
        ".*TensorBoard.*",
        ".*torch.tensor results.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
