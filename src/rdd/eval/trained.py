"""Training the protocol's networks on a set and their clean figures (validation, test,
test subgroups): one by one through Lightning, stacked under vmap (``eval.batched_nets``,
rdd.eval.stacked) or one per device in worker processes (``eval.devices``,
rdd.eval.parallel), in the same order and with the same seeds whichever way they train.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from rdd.eval.metrics import group_accuracy
from rdd.eval.parallel import Job, train_in_parallel, worker_devices
from rdd.eval.stacked import (
    SingleNet,
    TrainedNets,
    eval_device,
    stacked_clean_figures,
    train_stacked,
    use_stacked,
)
from rdd.eval.training import EvalNetModule, eval_trainer, train_eval_net
from rdd.utils.seeds import derived_seed


def score(
    module: EvalNetModule, trainer: L.Trainer, loader: DataLoader, split: str
) -> tuple[float, torch.Tensor]:
    """(accuracy, per-class accuracy) of a trained module on a loader, in percent."""
    run = trainer.validate if split == "val" else trainer.test
    run(module, dataloaders=loader, verbose=False)
    return module.accuracy()


def train_all(
    nets: dict[str, Callable[[], nn.Module]],
    images: torch.Tensor,
    labels: torch.Tensor,
    data: Any,
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    seed: int,
    test_groups: torch.Tensor | None,
) -> Iterator[tuple[str, TrainedNets, list[dict[str, Any]]]]:
    """Train every architecture's networks; yield (architecture, trained networks, their
    clean figures) in the order of the one-by-one evaluation: spread over worker processes
    (``eval.devices``), stacked (``eval.batched_nets``) or one by one in this process."""
    seeds = {arch: [derived_seed(seed, arch, i) for i in range(eval_cfg.num_nets)] for arch in nets}
    devices = worker_devices(eval_cfg, trainer_kwargs)
    if devices:
        yield from train_on_workers(
            nets, seeds, images, labels, data, eval_cfg, trainer_kwargs, test_groups, devices
        )
        return
    for arch, make_net in nets.items():
        for group, figures in train_architecture(
            arch, make_net, images, labels, data, eval_cfg, trainer_kwargs, seeds[arch], test_groups
        ):
            yield arch, group, figures


def train_on_workers(
    nets: dict[str, Callable[[], nn.Module]],
    seeds: dict[str, list[int]],
    images: torch.Tensor,
    labels: torch.Tensor,
    data: Any,
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    test_groups: torch.Tensor | None,
    devices: list[dict[str, Any]],
) -> Iterator[tuple[str, TrainedNets, list[dict[str, Any]]]]:
    """Every network trained by a worker (rdd.eval.parallel), scored here as it arrives."""
    jobs = [
        Job(
            make_net,
            images.detach().cpu(),
            labels.cpu(),
            data.num_classes,
            eval_cfg,
            trainer_kwargs,
            net_seed,
        )
        for arch, make_net in nets.items()
        for net_seed in seeds[arch]
    ]
    archs = [arch for arch in nets for _ in seeds[arch]]
    scorer = eval_trainer(trainer_kwargs)
    for arch, module in zip(archs, train_in_parallel(jobs, devices), strict=True):
        yield arch, SingleNet(module), [clean_figures(module, scorer, data, test_groups)]


def train_architecture(
    arch: str,
    make_net: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    data: Any,
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    seeds: list[int],
    test_groups: torch.Tensor | None,
) -> Iterator[tuple[TrainedNets, list[dict[str, Any]]]]:
    """Train one network per seed; yield (trained networks, their clean figures) as they
    finish: all at once when stacked (eval.batched_nets), else one by one through Lightning."""
    device = eval_device(trainer_kwargs)
    if use_stacked(arch, make_net, images, eval_cfg, trainer_kwargs, device):
        stack = train_stacked(make_net, images, labels, eval_cfg, seeds, device)
        yield stack, stacked_clean_figures(stack, data, test_groups)
        return
    for seed in seeds:
        module, trainer = train_eval_net(
            make_net, images, labels, data.num_classes, eval_cfg, trainer_kwargs, seed
        )
        yield SingleNet(module), [clean_figures(module, trainer, data, test_groups)]


def clean_figures(
    module: EvalNetModule, trainer: L.Trainer, data: Any, test_groups: torch.Tensor | None
) -> dict[str, Any]:
    """One trained network's figures on the validation split and the clean test set."""
    figures: dict[str, Any] = {}
    # data.val_fraction=0 (the published protocols: every training image is used): no val_acc.
    val = data.val_dataloader()
    if len(val.dataset):
        figures["val_acc"], _ = score(module, trainer, val, "val")
    # The test set last: correct_flags() below are its predictions.
    test_acc, per_class = score(module, trainer, data.test_dataloader(), "test")
    figures |= {
        "test_acc": test_acc,
        "worst_class_acc": float(per_class.min()),
        "class_acc": per_class.tolist(),
    }
    if test_groups is not None:
        per_cluster = group_accuracy(module.correct_flags(), test_groups.cpu())
        figures |= {
            "mean_cluster_acc": float(per_cluster.mean()),
            "worst_cluster_acc": float(per_cluster.min()),
            "cluster_acc": per_cluster.tolist(),
        }
    return figures
