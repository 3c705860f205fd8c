"""Tests for rdd.nets: every conf/net config builds and runs on every supported input shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rdd.config.compose import CONF_DIR
from rdd.config.errors import UserError
from rdd.nets import (
    ConvNet,
    ResNet18,
    ResNetAP10,
    available_nets,
    build_net,
    has_batchnorm,
    load_net_config,
)
from rdd.nets.alexnet import AlexNet
from rdd.nets.mlp import MLP
from rdd.nets.vgg import VGG11

NETS = available_nets()
SHAPES = [(1, (8, 8)), (1, (28, 28)), (3, (32, 32)), (3, (64, 64))]
NUM_CLASSES = 5
REQUIRED = [
    "convnet", "convnet_bn", "convnet_d1", "convnet_d2", "convnet_d4", "convnet_w64",
    "convnet_w256", "convnet_nonorm", "convnet_ln", "convnet_gn", "convnet_maxpool",
    "resnet18", "resnet18_bn", "resnetap10", "vgg11", "alexnet", "mlp",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Batches of 2 are too small to gain from OpenMP threads, whose spinning on a busy 2-core
    # machine made these tests several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_available_nets_lists_the_yaml_stems() -> None:
    stems = sorted(p.stem for p in (CONF_DIR / "net").glob("*.yaml"))
    assert available_nets() == stems
    assert set(REQUIRED) <= set(NETS)


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize(("channel", "im_size"), SHAPES, ids=lambda s: str(s))
def test_net_runs_on_every_shape(name: str, channel: int, im_size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    # Training mode, so batch norm sees batch statistics even on 1x1 maps.
    net = build_net(name, channel, NUM_CLASSES, im_size)
    assert isinstance(net.feature_dim, int)
    x = torch.randn(2, channel, *im_size)
    with torch.no_grad():
        assert net(x).shape == (2, NUM_CLASSES)
        assert net.embed(x).shape == (2, net.feature_dim)


@pytest.mark.parametrize("name", NETS)
def test_forward_is_classifier_of_embed_and_grads_reach_input(name: str) -> None:
    # 28x28, not 8x8: there deep nets reach a 1x1 map, where instance norm outputs a constant.
    torch.manual_seed(0)
    net = build_net(name, 1, NUM_CLASSES, (28, 28)).eval().requires_grad_(False)  # input grads only
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    logits = net(x)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        features = net.embed(x)
    assert features.shape == (2, net.feature_dim)
    torch.testing.assert_close(logits.detach(), net.classifier(features))


@pytest.mark.parametrize("cls", [ConvNet, ResNet18, ResNetAP10])
def test_128px_input(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    net = cls(3, NUM_CLASSES, (128, 128)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 128, 128)).shape == (1, NUM_CLASSES)


def test_size_agnostic_nets_accept_other_sizes() -> None:
    torch.manual_seed(0)
    net = VGG11(3, NUM_CLASSES, (32, 32)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 17, 9)).shape == (1, NUM_CLASSES)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"norm": "foo"},
        {"depth": 0},
        {"activation": "bar"},
        {"pooling": "sum"},
        {"width": 0},
        {"width": 6, "norm": "groupnorm"},
    ],
)
def test_convnet_rejects_invalid_options(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="|".join(kwargs)):
        ConvNet(3, 10, (32, 32), **kwargs)


@pytest.mark.parametrize("cls", [ResNet18, ResNetAP10, VGG11])
def test_norm_option_is_validated(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match="instancenorm"):
        cls(3, 10, (32, 32), norm="foo")


@pytest.mark.parametrize("cls", [ConvNet, ResNet18, ResNetAP10, VGG11, AlexNet, MLP])
@pytest.mark.parametrize(
    "args", [(0, 10, (32, 32)), (3, 0, (32, 32)), (3, 10, (32,)), (3, 10, (0, 32)), (3, 10, "32")]
)
def test_shape_arguments_are_validated(cls: type[nn.Module], args: tuple) -> None:
    with pytest.raises(ValueError):
        cls(*args)


def test_unknown_net_name_lists_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown net 'convnet9'.*convnet_bn.*resnet18"):
        load_net_config("convnet9")
    with pytest.raises(UserError, match="unknown net"):
        build_net("../net/convnet", 3, 10, (32, 32))


def test_build_net_accepts_dict_and_dictconfig() -> None:
    spec = {"_target_": "rdd.nets.convnet.ConvNet", "_partial_": True, "width": 16, "depth": 2}
    for cfg in (spec, OmegaConf.create(spec), {k: v for k, v in spec.items() if k != "_partial_"}):
        net = build_net(cfg, 1, 10, [28, 28])
        assert isinstance(net, ConvNet) and net.feature_dim == 16 * 7 * 7
    with pytest.raises(ValueError, match="norm"):
        build_net({**spec, "norm": "foo"}, 1, 10, (28, 28))
    with pytest.raises(UserError, match="_target_"):
        build_net({"width": 16}, 1, 10, (28, 28))


def test_default_convnet_config_matches_the_class_defaults() -> None:
    cfg = load_net_config("convnet")
    assert cfg._target_ == "rdd.nets.convnet.ConvNet"
    assert OmegaConf.to_container(cfg) == {
        "_target_": "rdd.nets.convnet.ConvNet", "_partial_": True,
        "width": 128, "depth": 3, "activation": "relu", "norm": "instancenorm",
        "pooling": "avgpool",
    }  # fmt: skip
    assert build_net(cfg, 3, 10, (32, 32)).feature_dim == 128 * 4 * 4


@pytest.mark.parametrize("name", NETS)
def test_has_batchnorm_only_for_bn_variants(name: str) -> None:
    net = build_net(name, 3, 10, (32, 32))
    assert has_batchnorm(net) == name.endswith("_bn")


def test_convnet_skips_pooling_at_1x1() -> None:
    net = ConvNet(1, 10, (8, 8), width=8, depth=5)
    assert net.feature_dim == 8  # 8 -> 4 -> 2 -> 1, then no more pooling
    assert ConvNet(1, 10, (8, 8), width=8, pooling="none").feature_dim == 8 * 64


def test_integer_like_arguments_are_accepted() -> None:
    net = ConvNet(torch.tensor(1), 10, torch.Size([8, 8]), width=torch.tensor(4), depth=1)
    assert net.feature_dim == 4 * 4 * 4
    with pytest.raises(ValueError, match="width"):
        ConvNet(1, 10, (8, 8), width=4.0)
    with pytest.raises(ValueError, match="depth"):
        ConvNet(1, 10, (8, 8), depth=True)


def test_a_net_builds_by_name_in_a_fresh_interpreter() -> None:
    """Library use without rdd.run: the net options start from schemas, which load_net_config
    registers itself (a bare `from rdd.nets import build_net` once failed with 'unknown net')."""
    import subprocess
    import sys

    code = "from rdd.nets import build_net; print(type(build_net('convnet', 3, 10, (32, 32))).__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ConvNet", done.stderr[-2000:]


def test_a_net_name_is_composed_once_and_each_caller_gets_its_own_config(monkeypatch) -> None:
    """``build_net("convnet", ...)`` in a loop (a network per DM iteration) composes the option
    once: a composition takes about half a second. A caller's change to its config reaches
    no other caller."""
    import rdd.nets as nets

    nets.composed_net.cache_clear()
    calls = []
    compose = nets.compose_in_app
    monkeypatch.setattr(nets, "compose_in_app", lambda *a: calls.append(a) or compose(*a))
    first = load_net_config("convnet_w32")
    first.width = 7
    second = load_net_config("convnet_w32")
    nets.build_net("convnet_w32", 3, 10, (32, 32))
    assert len(calls) == 1
    assert second.width == 32
    assert OmegaConf.to_container(second) == {**OmegaConf.to_container(first), "width": 32}
