"""The evaluation protocol a run resolves from its config: settings, networks, partition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rdd.config.errors import UserError
from rdd.config.schemas import EvalSchema
from rdd.eval.parallel import worker_devices
from rdd.eval.partition import check_features, partition_test_set
from rdd.eval.shifted_sets import check_shift_settings, shifted_test_sets
from rdd.nets import load_net_config, net_factory, net_name
from rdd.parallel.strategy import trainer_kwargs


@dataclass
class EvalProtocol:
    """What a run's evaluation needs, resolved before distilling so that a bad setting fails
    in seconds, not hours."""

    nets: dict[str, Any]  # architecture name -> factory of a fresh network
    settings: DictConfig  # the `eval` node with its dataset's defaults
    trainer: dict[str, Any]  # Lightning Trainer settings of one evaluation network
    test_groups: torch.Tensor  # the cached test partition
    shifted: Callable  # the shifted test sets, built when scored


def eval_protocol(cfg: DictConfig, data: Any) -> EvalProtocol:
    """The evaluation protocol of a run's config on its data."""
    nets, settings = eval_nets(cfg, data), eval_settings(cfg, data)
    trainer = eval_trainer_kwargs(cfg)
    return EvalProtocol(
        nets, settings, trainer, partition_of(data, settings), shifted_test_sets(data, settings)
    )


def eval_trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Evaluation networks train one at a time on one device, whatever the distillation used."""
    # The evaluator shows one bar over networks instead of Lightning's bar per network.
    settings = trainer_kwargs(cfg.trainer) | {"devices": 1, "num_nodes": 1, "strategy": "auto"}
    settings.pop("enable_progress_bar")
    return settings


def eval_settings(cfg: DictConfig, data: Any) -> DictConfig:
    """The `eval` config with its dataset-dependent defaults filled in."""
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    settings["dsa_strategy"] = settings["dsa_strategy"] or data.dsa_strategy
    check_protocol_values(settings)
    check_shift_settings(settings)
    return OmegaConf.create(settings)


def check_eval(cfg: DictConfig) -> None:
    """Every check of the `eval` node that needs no data, so that a bad value fails before the
    data loads and the distillation runs: the protocol's numbers, the shifts, the architectures
    named, ``eval.devices`` (and its clash with ``eval.batched_nets``). What needs the data
    (``eval.partition.k`` against the test set) is checked by :func:`partition_of`, still
    before distilling."""
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    check_protocol_values(settings)
    check_shift_settings(settings)
    check_features(settings["partition"]["features"])
    names = list(settings["nets"] or [])
    if settings["partition"]["features"] == "net":
        names.append(settings["partition"].get("net") or "convnet")
    for name in names:
        load_net_config(name)  # an unknown architecture: one line naming the options
    worker_devices(cfg.eval, eval_trainer_kwargs(cfg))


def check_protocol_values(settings: dict[str, Any]) -> None:
    """The protocol's numbers in range; each refusal suggests the published value."""
    published = EvalSchema()
    for key in ("num_nets", "epochs", "batch_size", "lr"):
        if settings[key] <= 0:
            raise UserError(
                f"eval.{key} must be positive, got {settings[key]}: "
                f"set e.g. eval.{key}={getattr(published, key)}"
            )
    for key, low, high in (("momentum", 0, 1), ("weight_decay", 0, float("inf"))):
        if not low <= settings[key] < high:
            raise UserError(
                f"eval.{key} must lie in [{low}, {high}), got {settings[key]}: "
                f"set e.g. eval.{key}={getattr(published, key)}"
            )
    if not 0 < settings["lr_decay_at"] <= 1:
        raise UserError(
            f"eval.lr_decay_at is a fraction of the epochs in (0, 1], got "
            f"{settings['lr_decay_at']}: set e.g. eval.lr_decay_at={published.lr_decay_at}"
        )


def partition_of(data: Any, settings: DictConfig) -> torch.Tensor:
    """The cached test partition of this dataset (identical for every method and run)."""
    part = settings.partition
    net_name = part.get("net") or "convnet"
    net_cfg = load_net_config(net_name)
    return partition_test_set(
        data.test_uint8,
        part.k,
        part.seed,
        part.features,
        data.cache_dir,
        make_net=net_factory(net_cfg, data),
        net_id=OmegaConf.to_yaml(net_cfg, sort_keys=True),
    )


def eval_nets(cfg: DictConfig, data: Any, default_name: str | None = None) -> dict[str, Any]:
    """Architecture name -> factory; `eval.nets: null` evaluates with the run's own network."""
    if not cfg.eval.nets:
        return {default_name or net_name(cfg): net_factory(cfg.net, data)}
    return {name: net_factory(load_net_config(name), data) for name in cfg.eval.nets}


def with_learned_lr(settings: DictConfig, lr: float | None) -> DictConfig:
    """Evaluation networks train with MTT's learned step size, as published, unless
    ``eval.lr_from_synset=false``."""
    if lr is None or not settings.get("lr_from_synset", True):
        return settings
    return OmegaConf.merge(settings, {"lr": float(lr)})
