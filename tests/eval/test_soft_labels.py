"""Evaluation networks train on soft labels with probability-target cross-entropy."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from rdd.eval.training import EvalNetModule, train_eval_net

PROTOCOL = OmegaConf.create(
    {"batch_size": 8, "epochs": 3, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
     "lr_decay_at": 0.5, "dsa": False, "dsa_strategy": ""}
)  # fmt: skip
TRAINER = {"accelerator": "cpu", "devices": 1}


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_one_hot_soft_labels_train_exactly_like_hard_labels() -> None:
    images = torch.randn(12, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    hard = torch.arange(3).repeat(4)
    one_hot = torch.nn.functional.one_hot(hard, 3).float()
    trained = [
        train_eval_net(tiny_net, images, labels, 3, PROTOCOL, TRAINER, seed=5)[0]
        for labels in (hard, one_hot)
    ]
    for a, b in zip(trained[0].parameters(), trained[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_soft_label_loss_is_the_hand_computed_cross_entropy() -> None:
    torch.manual_seed(0)
    module = EvalNetModule(tiny_net(), 3, 0.1, 0.9, 0.0, 10, None, 0)
    x, target = torch.randn(5, 1, 4, 4), torch.rand(5, 3).softmax(1)
    logits = module.net(x).detach().double()
    expected = -(target.double() * (logits - logits.exp().sum(1, keepdim=True).log())).sum(1).mean()
    assert abs(float(module.training_step((x, target), 0).detach()) - float(expected)) < 1e-6
