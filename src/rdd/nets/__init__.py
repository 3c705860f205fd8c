"""Networks for dataset distillation and their Hydra configs (``conf/net/*.yaml``).

Every network is built as ``Net(channel, num_classes, im_size, **options)``, maps images
(N, channel, H, W) to logits (N, num_classes), and has ``embed(x) -> (N, feature_dim)`` with
``forward(x) == classifier(embed(x))``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from typing import Any

import hydra.utils
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from rdd.config.compose import app_searchpath, compose_in_app, group_options
from rdd.config.errors import UserError
from rdd.nets.alexnet import AlexNet
from rdd.nets.convnet import ConvNet
from rdd.nets.mlp import MLP
from rdd.nets.resnet import ResNet, ResNet18, ResNetAP10
from rdd.nets.vgg import VGG11

__all__ = [
    "MLP",
    "VGG11",
    "AlexNet",
    "ConvNet",
    "ResNet",
    "ResNet18",
    "ResNetAP10",
    "available_nets",
    "build_net",
    "has_batchnorm",
    "load_net_config",
]

# Every kind of batch norm keeps running statistics and couples the samples of a batch.
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def available_nets() -> list[str]:
    """The options of the `net` config group, as Hydra finds them."""
    return group_options("net")


def load_net_config(name: str) -> DictConfig:
    """The `net` option ``name`` composed by Hydra as ``net=<name>`` selects it, with the
    running app's search path, so that ``eval.nets`` names the same configs as the command
    line (conf/eval_net.yaml holds just that one choice), not a registry of its own.

    Raises:
        UserError: If there is no such option; the message lists the available ones.
    """
    if not name.replace("_", "").replace("-", "").isalnum():  # an option name, not a path
        raise UserError(f"unknown net '{name}': choose one of {', '.join(available_nets())}")
    try:
        return OmegaConf.create(composed_net(name, tuple(app_searchpath())))
    except MissingConfigException:
        # Not Hydra's err.options: they list rdd.config.schemas' entries (convnet_schema) too.
        options = ", ".join(available_nets())
        raise UserError(f"unknown net '{name}': choose one of {options}") from None


@lru_cache(maxsize=32)
def composed_net(name: str, searchpath: tuple[str, ...]) -> dict:
    """The `net` option ``name`` as a plain dict, composed once per search path: a composition
    takes about 0.3-0.6 s, and ``build_net("convnet", ...)`` builds a network per DM iteration
    in a loop (on a GPU that was most of the iteration). Callers get a fresh DictConfig of it."""
    del searchpath  # the cache key: compose_in_app reads the running app's search path itself
    return OmegaConf.to_container(compose_in_app("eval_net", [f"net={name}"]).net, resolve=True)


def build_net(
    net_cfg: DictConfig | Mapping[str, Any] | str,
    channel: int,
    num_classes: int,
    im_size: tuple[int, int],
) -> nn.Module:
    """Instantiate a network from its config.

    Args:
        net_cfg: A net config (``_target_`` plus options, as in ``conf/net``), as a DictConfig
            or a dict, or the name of a config in ``conf/net``.
        channel: Input channels C.
        num_classes: Number of logits K.
        im_size: Input (H, W).

    Returns:
        The network, on the CPU, in training mode.

    Raises:
        UserError: If ``net_cfg`` names no config or has no ``_target_``.
        ValueError: If an option is invalid.
    """
    if isinstance(net_cfg, str):
        net_cfg = load_net_config(net_cfg)
    cfg = OmegaConf.to_container(OmegaConf.create(net_cfg), resolve=True)
    if not isinstance(cfg, dict) or "_target_" not in cfg:
        raise UserError(
            f"net config needs a '_target_' such as rdd.nets.convnet.ConvNet, got {net_cfg!r}"
        )
    # Always build a partial so configs written without `_partial_: true` work as well.
    cfg["_partial_"] = True
    factory = hydra.utils.instantiate(cfg)
    return factory(channel=channel, num_classes=num_classes, im_size=tuple(im_size))


def has_batchnorm(net: nn.Module) -> bool:
    """Return whether any submodule of ``net`` is a batch norm layer."""
    return any(isinstance(module, _BATCHNORMS) for module in net.modules())


def net_name(cfg: DictConfig) -> str:
    """The name of the run's net: the `net` option whose config ``cfg.net`` is (``convnet_w32``
    for width 32), else its class (``convnet``). It depends on the config alone, so a run from
    the command line and one composed in Python name (and find) the same MTT buffer and
    metrics keys, whatever option and overrides produced the net."""
    options = option_configs(tuple(app_searchpath()))
    mine = comparable(OmegaConf.to_container(cfg.net, resolve=True))
    return next((name for name, config in options if config == mine), class_name(cfg))


def legacy_net_names(cfg: DictConfig) -> list[str]:
    """Names ``net_name`` gave this net before it depended on the config alone: the command
    line's option (``net=convnet net.width=32``: convnet) or, composed in Python, the class."""
    from hydra.core.hydra_config import HydraConfig

    chosen = HydraConfig.get().runtime.choices.get("net") if HydraConfig.initialized() else None
    names = dict.fromkeys(n for n in (chosen, class_name(cfg)) if n)
    return [n for n in names if n != net_name(cfg)]


def class_name(cfg: DictConfig) -> str:
    return cfg.net._target_.rsplit(".", 1)[-1].lower()


@lru_cache(maxsize=4)
def option_configs(searchpath: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(name, comparable config) of every `net` option, composed once per search path: all in
    one composition (each under its own package), else one by one, leaving out any that does
    not compose (a broken option on the search path names no net)."""
    del searchpath  # the cache key: compose_in_app reads the running app's search path itself
    names = available_nets()
    packaged = [f"+net@every.{name}={name}" for name in names]
    try:
        # eval_net needs its one `net` choice (any); the options come under `every`.
        every = compose_in_app("eval_net", ["net=mlp", *packaged]).every
        nets = {name: every[name] for name in names}
    except (HydraException, OmegaConfBaseException):
        nets = {}
        for name in names:
            with contextlib.suppress(HydraException, OmegaConfBaseException):
                nets[name] = load_net_config(name)
    return tuple(
        (name, comparable(OmegaConf.to_container(net, resolve=True))) for name, net in nets.items()
    )


def comparable(net: dict) -> str:
    """A net config as text that is equal for equal networks (``_partial_`` is how it is
    built, not which net)."""
    return json.dumps({k: v for k, v in net.items() if k != "_partial_"}, sort_keys=True)


def net_factory(net_cfg: Any, data: Any) -> Callable[[], nn.Module]:
    """A function building a fresh network for this dataset's shape (picklable, for DDP's
    spawned processes)."""
    return partial(build_net, net_cfg, data.channel, data.num_classes, tuple(data.im_size))


def checked_net_factory(net_cfg: Any, data: Any) -> Callable[[], nn.Module]:
    """The run's net factory, after building one network: a bad net option fails now, not
    after the data is clustered or an hour of distillation."""
    make_net = net_factory(net_cfg, data)
    try:
        make_net()
    except ValueError as err:  # the nets' option checks (UserError is one)
        raise UserError(f"invalid net setting: {err}") from None
    return make_net
