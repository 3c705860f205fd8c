"""Hyper-parameter searches (conf/hparams_search): the metric a search optimises must be one
the run reports, and a validation figure (the test set never selects settings).

A sweeper that optimises (Optuna) reads ``main``'s return value, ``cfg[optimized_metric]`` of
the run's metrics; a metric the run never produces would otherwise surface after the first
trial's whole distillation as Optuna's "Return value must be float-castable" traceback.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rdd.config.cli import fail
from rdd.config.errors import UserError

# The sweeper that only launches jobs (grid sweeps, `-m a=1,2`) and ignores return values.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def optimizing_sweeper(hydra_cfg: Any) -> bool:
    """Whether the sweeper of this Hydra config optimises a return value (Optuna does)."""
    target = str(hydra_cfg.get("sweeper", {}).get("_target_", BASIC_SWEEPER))
    return target != BASIC_SWEEPER


def validation_metrics(cfg: DictConfig) -> list[str]:
    """The validation figures a run of ``cfg`` reports: ``val_acc`` and ``<arch>/val_acc``
    per evaluation architecture; none with ``data.val_fraction=0`` (no validation split)."""
    if not float(cfg.data.get("val_fraction") or 0) > 0:
        return []
    from rdd.nets import net_name  # the name the run's own net's figures are stored under

    nets = cfg.eval.get("nets") or [net_name(cfg)]
    return ["val_acc", *(f"{net}/val_acc" for net in nets if net)]


def check_optimized_metric(cfg: DictConfig) -> None:
    """Refuse a search whose ``optimized_metric`` the run does not report."""
    metric = cfg.get("optimized_metric")
    available = validation_metrics(cfg)
    if metric in available:
        return
    if not available:
        raise UserError(
            f"a search optimises optimized_metric={metric}, but data.val_fraction=0 leaves no "
            "validation split to score it on: set data.val_fraction=0.1 (the test set never "
            "selects settings)"
        )
    raise UserError(
        f"optimized_metric={metric} is not a validation figure this run reports: choose one of "
        f"{', '.join(available)} (e.g. optimized_metric=val_acc)"
    )


class CheckSearch(Callback):
    """Hydra callback (conf/hydra/default.yaml): checks a search's metric before any job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "optimized_metric" not in config or not optimizing_sweeper(config.hydra):
            return
        try:
            check_optimized_metric(config)
        except UserError as err:
            # Hydra turns a callback's exception into a warning and carries on: exit here,
            # before the sweeper launches a job (nothing is written yet).
            fail(err)
