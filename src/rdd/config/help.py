"""``--help`` of the entry points: the config groups a user picks from, with their YAML
options only. Hydra's own ``$APP_CONFIG_GROUPS`` also lists the ConfigStore schemas that the
options start from (``data_schema``, ``gradient_schema``, ...), which are no choices; the help
template in conf/hydra/default.yaml calls the resolver below instead."""

from __future__ import annotations

import textwrap
from typing import Any

from omegaconf import OmegaConf

from rdd.config.compose import CONF_DIR

RESOLVER = "rdd_config_groups"

# What an entry point whose config extends run.yaml leaves out of its --help: the groups it
# never reads, and for a group it reads, the prefix of the options it accepts. rdd.buffer
# makes MTT's experts: it evaluates nothing, logs no metrics, runs no Lightning callbacks,
# searches nothing, and refuses any matching but mtt (rdd.experts.training).
UNUSED_GROUPS = {"buffer": ("eval", "logger", "callbacks", "hparams_search", "debug")}
ACCEPTED_OPTIONS = {"buffer": {"matching": "mtt", "experiment": "mtt_"}}


def defaults_of(config_name: str) -> list[tuple[str, Any]]:
    """(group, default option) for each group a primary config's defaults list selects, the
    configs it extends included (buffer.yaml extends run.yaml). Groups chosen for the user
    (``optional budget: ${data}``) and Hydra's own are left out."""
    entries: list[tuple[str, Any]] = []
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{config_name}.yaml"), resolve=False)
    for entry in raw.get("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_" and (CONF_DIR / f"{entry}.yaml").is_file():
                entries += defaults_of(entry)
            continue
        ((key, value),) = entry.items()
        if key.startswith("optional ") or key.startswith("override ") or key == "hydra":
            continue
        entries.append((key, value))
    return entries


def group_help(config_name: str) -> str:
    """One line per group the entry point reads: ``matching: dc, dm, ... (default: dc)``;
    ``matching: mtt (required)`` where it accepts only options its default is not."""
    lines = []
    accepted = ACCEPTED_OPTIONS.get(config_name, {})
    for group, default in defaults_of(config_name):
        if group in UNUSED_GROUPS.get(config_name, ()):
            continue
        prefix = accepted.get(group, "")
        options = sorted(p.stem for p in (CONF_DIR / group).glob(f"{prefix}*.yaml"))
        chosen = f"default: {default}" if default is not None else "optional"
        if default is not None and default not in options:
            chosen = "required"
        line = f"{group}: {', '.join(options)} ({chosen})"
        lines.append(textwrap.fill(line, width=100, subsequent_indent="    "))
    return "\n".join(lines)


def register_help_resolver() -> None:
    OmegaConf.register_new_resolver(RESOLVER, group_help, replace=True)
