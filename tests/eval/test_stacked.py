"""Stacked evaluation (eval.batched_nets) against the oracle: networks trained one by one.

vmap runs a stack's convolutions as one grouped convolution and its linear layers as a batched
matmul, whose sums may be accumulated in another order than one network's own kernels (grouped
convolution; group norm with its affine as a separate step); the weights therefore agree to
float rounding, not bitwise (the tolerances below). The figures (argmax predictions) agree
exactly on these easy sets; on data with near-ties an image can flip.
"""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rdd.eval.scoring import evaluate_synset
from rdd.eval.stacked import stacking_error, train_stacked, use_stacked
from rdd.eval.training import train_eval_net
from rdd.nets import build_net
from tests.eval.test_scoring import CPU, EasyData

# 30 images in batches of 16: two batches an epoch (one short), the decay after epoch 3.
PROTOCOL = OmegaConf.create(
    {"num_nets": 3, "epochs": 6, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
     "batch_size": 16, "lr_decay_at": 0.5, "dsa": True,
     "dsa_strategy": "color_crop_cutout_scale_rotate"}
)  # fmt: skip
SEEDS = [11, 22, 33]
# Float rounding of differently ordered sums, grown over 12 SGD steps; a wrong seed, batch,
# augmentation draw or update is off by orders of magnitude more.
TOL = {"rtol": 1e-4, "atol": 1e-5}


def convnet(norm: str = "instancenorm"):
    cfg = {"_target_": "rdd.nets.convnet.ConvNet", "width": 8, "depth": 2, "norm": norm}
    return lambda: build_net(cfg, 1, 10, (8, 8))


def train_set() -> tuple[torch.Tensor, torch.Tensor]:
    return EasyData(per_class=3).train


def sequential_states(make_net, x, y, settings=PROTOCOL, seeds=SEEDS) -> list[dict]:
    """Every network's state after training alone through Lightning (the oracle)."""
    states = []
    for seed in seeds:
        module, _ = train_eval_net(make_net, x, y, 10, settings, CPU, seed)
        states.append({k: v.detach().clone() for k, v in module.net.state_dict().items()})
    return states


def assert_stack_matches(stack, states) -> None:
    for i, state in enumerate(states):
        got = stack.network(i).state_dict()
        assert got.keys() == state.keys()
        for key, value in state.items():
            torch.testing.assert_close(got[key], value, **TOL, msg=f"network {i}: {key}")


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm"])
def test_stacked_networks_equal_the_ones_trained_alone(norm: str) -> None:
    """Weights (and BatchNorm's running statistics and step counts) of every network."""
    x, y = train_set()
    states = sequential_states(convnet(norm), x, y)
    assert_stack_matches(train_stacked(convnet(norm), x, y, PROTOCOL, SEEDS), states)
    # The tolerance separates networks: two different seeds are far apart.
    assert not torch.allclose(states[0]["classifier.weight"], states[1]["classifier.weight"], **TOL)
    if norm == "batchnorm":
        assert int(states[0]["features.1.num_batches_tracked"]) == 12


def test_a_network_alone_equals_the_same_network_in_a_stack() -> None:
    """Network i's seed decides its initialisation, batch order and DSA draws, not its place."""
    x, y = train_set()
    stack = train_stacked(convnet(), x, y, PROTOCOL, SEEDS)
    alone = train_stacked(convnet(), x, y, PROTOCOL, SEEDS[1:2])
    for key, value in alone.network(0).state_dict().items():
        torch.testing.assert_close(stack.network(1).state_dict()[key], value, **TOL)


def test_resnet18_with_batchnorm_trains_stacked_like_alone() -> None:
    """Two networks, two steps of 6 images: BatchNorm's statistics in 20 layers."""
    x, y = train_set()
    x, y = x[::5], y[::5]
    settings = OmegaConf.merge(PROTOCOL, {"epochs": 2, "batch_size": 6, "dsa": False})
    cfg = {"_target_": "rdd.nets.resnet.ResNet18", "norm": "batchnorm"}

    def resnet():
        return build_net(cfg, 1, 10, (8, 8))

    states = sequential_states(resnet, x, y, settings, SEEDS[:2])
    assert_stack_matches(train_stacked(resnet, x, y, settings, SEEDS[:2]), states)


def test_soft_labels_train_stacked_like_alone() -> None:
    x, y = train_set()
    soft = torch.rand(len(y), 10, generator=torch.Generator().manual_seed(0)).softmax(1)
    states = sequential_states(convnet(), x, soft)
    assert_stack_matches(train_stacked(convnet(), x, soft, PROTOCOL, SEEDS), states)


def evaluate(batched: bool, nets: dict, updates: list | None = None):
    data = EasyData(per_class=3)
    test_x = data.test[0]
    settings = OmegaConf.merge(PROTOCOL, {"num_nets": 2, "batched_nets": batched})

    def shifted():
        yield "invert", -test_x
        noise = torch.randn(test_x.shape, generator=torch.Generator().manual_seed(1))
        yield "corruption_noise_s1", test_x + 0.5 * noise
        yield "corruption_zero_s2", torch.zeros_like(test_x)

    return evaluate_synset(
        *data.train,
        data,
        nets,
        settings,
        CPU,
        seed=4,
        test_groups=torch.arange(len(data.test_y)) % 4,
        shifted=shifted,
        known_group=lambda: ("blurred", test_x * 0.5),
        on_update=lambda metrics, complete: updates.append(complete) if updates is not None else 0,
    )


def test_batched_evaluation_equals_the_sequential_one() -> None:
    """Every metric and every per-network detail of two architectures, shifted sets, clusters
    and the known group; on_update after each network (one by one) or architecture (stacked)."""
    nets = {"convnet": convnet(), "convnet_bn": convnet("batchnorm")}
    updates_seq: list[bool] = []
    updates_stacked: list[bool] = []
    sequential = evaluate(False, nets, updates_seq)
    stacked = evaluate(True, nets, updates_stacked)
    assert stacked.keys() == sequential.keys()
    for key, value in sequential.items():
        assert stacked[key] == pytest.approx(value, abs=1e-9), key
    assert stacked.details == sequential.details
    assert {"worst_group_acc", "corruption_acc", "convnet_bn/invert_acc"} <= stacked.keys()
    # 4 networks, then 3 shifted sets, then the end; stacked: 2 architectures instead of 4.
    assert updates_seq == [False] * 7 + [True]
    assert updates_stacked == [False] * 5 + [True]


class ReadsValues(nn.Module):
    """A network vmap cannot run: its forward reads a tensor's value with ``.item()``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if x.abs().max().item() < 1e6 else 0.0
        return self.linear(x.flatten(1)) * scale


def test_a_network_vmap_cannot_run_falls_back_to_one_by_one_with_a_warning(caplog) -> None:
    x, y = train_set()
    assert "item" in stacking_error(ReadsValues, x)
    assert stacking_error(convnet("batchnorm"), x) is None
    with caplog.at_level(logging.WARNING, logger="rdd.eval.stacked"):
        fallback = evaluate(True, {"reads": ReadsValues})
    lines = [r.getMessage() for r in caplog.records if "batched_nets" in r.getMessage()]
    assert len(lines) == 1 and "reads networks cannot be stacked" in lines[0]
    assert fallback == evaluate(False, {"reads": ReadsValues})


def test_null_false_and_mixed_precision_train_one_by_one(caplog) -> None:
    """null stacks only off the CPU; false never; mixed precision never (with a warning)."""
    x, _ = train_set()
    cpu, gpu = torch.device("cpu"), torch.device("cuda")

    def stacks(setting, device=cpu, trainer=CPU) -> bool:
        settings = OmegaConf.merge(PROTOCOL, {"batched_nets": setting})
        return use_stacked("convnet", convnet(), x, settings, trainer, device)

    assert stacks(True) and not stacks(False) and not stacks(None)
    assert not stacks(False, gpu)
    assert stacks(None, gpu)  # the decision only: the probe itself runs on the CPU
    with caplog.at_level(logging.WARNING, logger="rdd.eval.stacked"):
        assert not stacks(True, trainer=CPU | {"precision": "bf16-mixed"})
    assert "trainer.precision=bf16-mixed" in caplog.text
