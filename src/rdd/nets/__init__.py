"""Networks for dataset distillation and their Hydra configs (``conf/net/*.yaml``).

Every network is built as ``Net(channel, num_classes, im_size, **options)``, maps images
(N, channel, H, W) to logits (N, num_classes), and has ``embed(x) -> (N, feature_dim)`` with
``forward(x) == classifier(embed(x))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import hydra.utils
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rdd.config import CONF_DIR
from rdd.errors import UserError
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


@contextmanager
def _hydra_configs() -> Iterator[GlobalHydra]:
    """Hydra's config repository: the running app's (with its search path, so a net config a
    user adds with ``hydra.searchpath``/``--config-dir`` is found too), else rdd's own."""
    from rdd.schemas import register_schemas  # the option files start from these schemas

    register_schemas()
    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance()
        return
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance()


def available_nets() -> list[str]:
    """The options of the `net` config group, as Hydra finds them."""
    with _hydra_configs() as hydra_configs:
        options = hydra_configs.config_loader().get_group_options("net")
    return sorted(o for o in options if not o.endswith("_schema"))  # rdd.schemas' entries


def load_net_config(name: str) -> DictConfig:
    """The `net` option ``name`` composed by Hydra as ``net=<name>`` selects it, with the
    running app's search path, so that ``eval.nets`` names the same configs as the command
    line (conf/eval_net.yaml holds just that one choice), not a registry of its own.

    Raises:
        UserError: If there is no such option; the message lists the available ones.
    """
    if not name.replace("_", "").replace("-", "").isalnum():  # an option name, not a path
        raise UserError(f"unknown net '{name}': choose one of {', '.join(available_nets())}")
    with _hydra_configs():
        try:
            return compose(config_name="eval_net", overrides=[f"net={name}", *_searchpath()]).net
        except MissingConfigException:
            # Not Hydra's err.options: they list rdd.schemas' entries (convnet_schema) too.
            options = ", ".join(available_nets())
            raise UserError(f"unknown net '{name}': choose one of {options}") from None


def _searchpath() -> list[str]:
    """The running app's ``hydra.searchpath`` as an override (none outside an app)."""
    from hydra.core.hydra_config import HydraConfig

    paths = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
    return [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []


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
    """The chosen `net` option (conf/net/<name>.yaml), e.g. 'convnet'."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("net", "net")
    return cfg.net._target_.rsplit(".", 1)[-1].lower()


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
