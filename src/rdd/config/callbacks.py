"""The `callbacks` config group: Lightning callbacks for the distillation Trainer.

Each entry of ``cfg.callbacks`` is ``<name>: {_target_: ..., ...}`` (conf/callbacks/*.yaml);
they join rdd's own checkpoint callbacks (rdd.checkpoint.state) in ``rdd.run.distill``. The
evaluation networks' Trainers get none: they train one small network each, by the protocol.
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from rdd.config.compose import first_line
from rdd.config.errors import UserError


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """Instantiate ``cfg.callbacks`` (absent or null: none); a null entry is skipped, so that
    ``callbacks.timer=null`` drops one callback of an option, and so is a progress bar when
    ``trainer.enable_progress_bar=false``."""
    nodes = cfg.get("callbacks") or {}
    progress_bar = bool(cfg.trainer.get("enable_progress_bar", True))
    callbacks = []
    for name, node in nodes.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserError(
                f"callbacks.{name} must name a Lightning callback class: set "
                f"callbacks.{name}._target_ (e.g. lightning.pytorch.callbacks.Timer)"
            )
        try:
            callback = instantiate(node)
        except InstantiationException as err:
            cause = err.__cause__ or err
            raise UserError(f"invalid callbacks.{name}: {first_line(cause)}") from None
        if not isinstance(callback, Callback):
            raise UserError(
                f"callbacks.{name} ({node._target_}) is not a Lightning Callback: "
                "name a lightning.pytorch.Callback class"
            )
        # The callback chooses which bar, trainer.enable_progress_bar whether there is one
        # (Lightning refuses a bar callback on a Trainer without a bar).
        if isinstance(callback, ProgressBar) and not progress_bar:
            continue
        callbacks.append(callback)
    return callbacks
