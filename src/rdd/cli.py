"""Command-line plumbing shared by the entry points: early checks and one-line errors."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf.errors import OmegaConfBaseException

from rdd.config import CONF_DIR, check_fresh, check_writable, explain, first_line
from rdd.errors import UserError
from rdd.help import register_help_resolver

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


def fail(err: Exception) -> NoReturn:
    """Print a user error as one line and exit with status 2."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


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
        check_overrides(argv)
        out_dir = requested_out_dir(argv, multirun)
        if out_dir is not None:
            check_fresh(out_dir, multirun)
            check_writable(out_dir)
    except UserError as err:
        fail(err)
    existed = out_dir is not None and out_dir.exists()
    register_help_resolver()  # --help's group list (conf/hydra/default.yaml)
    RememberSweepDir.path = None
    # Hydra then raises its errors instead of printing them over several lines.
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except COMPOSITION_ERRORS as err:
        # A sweep writes multirun.yaml before it composes its jobs.
        if RememberSweepDir.path is not None and not existed:
            remove_hydra_files(RememberSweepDir.path)
        fail(UserError(composition_message(err)))
    except PermissionError as err:
        fail(UserError(f"cannot write to '{err.filename}': choose a writable hydra.run.dir"))
    finally:
        restore_env("HYDRA_FULL_ERROR", previous)


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


def remove_hydra_files(out_dir: Path) -> None:
    """Remove a directory this command created if it holds only Hydra's own files."""
    hydra_files = {"multirun.yaml", ".hydra"}
    if out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= hydra_files:
        shutil.rmtree(out_dir, ignore_errors=True)


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
