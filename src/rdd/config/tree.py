"""The resolved config as a tree, one branch per top-level section (printed at a run's start).

Sections come in the order of a run's pipeline (data first, loggers and paths last), so the
settings that decide a result are read first; ``rich`` draws the tree (plain text when the
output is no terminal, e.g. a log file or a test's captured output).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from rdd.utils.io import write_text

ORDER = (
    "data",
    "net",
    "matching",
    "clustering",
    "risk",
    "robust",
    "experts",
    "eval",
    "trainer",
    "callbacks",
    "logger",
    "paths",
)


def section_yaml(cfg: DictConfig, key: str) -> str:
    """One section as YAML, resolved where it resolves (an interpolation that does not, e.g.
    Hydra's run dir outside a Hydra app, is shown as written)."""
    node = cfg[key]
    if not OmegaConf.is_config(node):
        return f"{node}\n"
    try:
        return OmegaConf.to_yaml(node, resolve=True)
    except OmegaConfBaseException:
        return OmegaConf.to_yaml(node, resolve=False)


def config_tree(cfg: DictConfig, order: Sequence[str] = ORDER, width: int = 100) -> str:
    """The tree as text: the sections of ``order`` first, then the others; top-level
    scalars (ipc, seed, ...) in one branch of their own."""
    tree = rich.tree.Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    scalars = [k for k in keys if not OmegaConf.is_config(cfg[k])]
    for key in keys:
        if key in scalars:
            continue
        branch = tree.add(key)
        text = section_yaml(cfg, key).rstrip() or "{}"
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    if scalars:
        top = "\n".join(f"{k}: {section_yaml(cfg, k).rstrip()}" for k in scalars)
        tree.add("top level").add(rich.syntax.Syntax(top, "yaml", theme="ansi_dark"))
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(tree)
    return buffer.getvalue()


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> str:
    """Print the tree (and write it to ``save_to``); returns it."""
    text = config_tree(cfg)
    print(text, end="")
    if save_to is not None:
        write_text(save_to, text)
    return text
