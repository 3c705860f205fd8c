"""Command-line plumbing shared by the entry points: early checks and one-line errors."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from rdd.config import CONF_DIR, check_composes
from rdd.errors import UserError

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
    "experiment",
)


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_overrides(argv: Sequence[str]) -> None:
    """Reject unknown group options (``matching=foo``) and a non-positive ``ipc``.

    Sweep values (``matching=dc,dsa``) are checked one by one.
    """
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


def run_cli(hydra_main: Callable[[], object], config_name: str) -> None:
    """Check the command line (group options, ipc, then the composed config's types and
    keys), then hand over to a @hydra.main function of ``config_name``."""
    try:
        check_overrides(sys.argv[1:])
        if not {"--help", "-h", "--info", "--cfg", "-c"} & set(sys.argv[1:]):
            check_composes(config_name, sys.argv[1:])
    except UserError as err:
        fail(err)
    hydra_main()


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
