"""The evaluation networks of one architecture trained together (``eval.batched_nets``).

Network i keeps everything it has when trained alone (rdd.eval.training): its initial weights,
its batch order and its DSA draws, each from its own seed. Only the arithmetic is shared: the
parameters of all networks are stacked (``torch.func.stack_module_state``) and one
``vmap``-ed ``functional_call`` runs every network on its own batch in one call, so a step
costs a few large kernels instead of many small ones (and one optimizer step for all).

SGD, momentum, weight decay and the step decay act elementwise, so the stacked optimizer
applies exactly each network's own update. The forward and backward passes are the same
mathematics but not the same kernels: vmap turns a convolution of M networks into a grouped
convolution and a linear layer into a batched matmul, whose sums may be accumulated in another
order (~1e-7 after a step). Weights therefore equal the sequential ones to float rounding
(tests/eval/test_stacked.py), not bitwise, and a test image at a decision boundary may be
classified differently (benchmarks/bench_eval_speed.py reports the largest difference). BatchNorm is handled: its running statistics are stacked
buffers that every network updates from its own batch.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.data import DataLoader

from rdd.eval.metrics import ClassAccuracy, group_accuracy
from rdd.eval.training import (
    EvalNetModule,
    augment_of,
    augment_seed,
    batch_order,
    decay_step,
    init_net,
    protocol_optimizer,
)
from rdd.outputs.progress import EpochBar

log = logging.getLogger(__name__)

# Test images per batch when one network scores a set on its own (the sequential path).
SHIFTED_BATCH = 512
# Network-images per forward when M stacked networks score a set (1024 // M images a batch):
# ~0.5 GiB per activation of ConvNet-3 w128 on 32x32 images.
STACKED_BATCH = 1024


class TrainedNets:
    """The trained networks of one architecture as scoring sees them: M networks that
    predict. Subclasses: :class:`SingleNet` (sequential path), :class:`StackedNets`."""

    num_nets: int

    def predict(self, x: Tensor) -> Tensor:
        """(M, N) int64 predicted classes (CPU) of every network for images x (N, C, H, W)."""
        raise NotImplementedError


class SingleNet(TrainedNets):
    """One network trained alone by Lightning (rdd.eval.training.train_eval_net)."""

    num_nets = 1

    def __init__(self, module: EvalNetModule) -> None:
        self.module = module

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        # A plain loop rather than ``trainer.test``: dozens of shifted sets per network
        # would otherwise spend most of their time in Lightning's per-call set-up.
        self.module.eval()
        device = self.module.device
        preds = [self.module(xb.to(device)).argmax(1).cpu() for xb in x.split(SHIFTED_BATCH)]
        return torch.cat(preds)[None]


class StackedNets(TrainedNets):
    """M networks of one architecture as stacked parameters (M, ...) run under vmap.

    Args:
        nets: M networks with identical structure (built by one factory).
        device: where the stacked parameters live.
    """

    def __init__(self, nets: Sequence[nn.Module], device: torch.device | str) -> None:
        self.num_nets = len(nets)
        params, buffers = stack_module_state(list(nets))
        self.params = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.device = torch.device(device)
        # The template whose code runs with each network's tensors; its own hold no memory.
        self.base = copy.deepcopy(nets[0]).to("meta")

    def train(self, mode: bool = True) -> None:
        """Training (batch statistics, running stats updated) or evaluation mode."""
        self.base.train(mode)

    def _one(self, params: dict, buffers: dict, x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: Tensor, shared: bool = False) -> Tensor:
        """Logits (M, B, K) of every network for its own images x (M, B, C, H, W), or for the
        same images x (B, C, H, W) if ``shared``."""
        run = vmap(self._one, in_dims=(0, 0, None if shared else 0), randomness="error")
        return run(self.params, self.buffers, x)

    @torch.inference_mode()
    def predict(self, x: Tensor) -> Tensor:
        self.train(False)
        per_batch = max(1, STACKED_BATCH // self.num_nets)
        preds = [
            self(xb.to(self.device), shared=True).argmax(-1).cpu() for xb in x.split(per_batch)
        ]
        return torch.cat(preds, 1) if preds else torch.zeros(self.num_nets, 0, dtype=torch.long)

    def network(self, i: int) -> nn.Module:
        """Network i as a plain module (a copy, in evaluation mode)."""
        net = copy.deepcopy(self.base).to_empty(device=self.device)
        state = {k: v[i].detach() for k, v in (self.params | self.buffers).items()}
        net.load_state_dict(state)
        return net.eval()


def use_stacked(
    arch: str,
    make_net: Callable[[], nn.Module],
    images: Tensor,
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    device: torch.device,
) -> bool:
    """Whether the networks of ``arch`` train stacked on ``device``: ``eval.batched_nets``
    (null: only off the CPU, where stacking is slower), full precision (the Lightning path's
    mixed precision is not reproduced here) and networks that vmap can run; otherwise they
    train one by one, with a one-line warning if stacking was asked for."""
    setting = eval_cfg.get("batched_nets")
    if setting is False or (setting is None and device.type == "cpu"):
        return False
    precision = str(trainer_kwargs.get("precision", "32-true"))
    if precision not in ("32", "32-true"):
        log.warning(
            "eval.batched_nets: trainer.precision=%s is not stacked; %s networks train one by one",
            precision,
            arch,
        )
        return False
    error = stacking_error(make_net, images)
    if error is not None:
        log.warning(
            "eval.batched_nets: %s networks cannot be stacked (%s); they train one by one",
            arch,
            error,
        )
    return error is None


def eval_device(trainer_kwargs: dict[str, Any]) -> torch.device:
    """The device Lightning would train an evaluation network on (trainer.accelerator), with
    ``trainer.deterministic`` applied as the Trainer applies it."""
    if trainer_kwargs.get("deterministic"):
        warn_only = trainer_kwargs["deterministic"] == "warn"
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    fabric = L.Fabric(
        accelerator=trainer_kwargs.get("accelerator", "auto"),
        devices=trainer_kwargs.get("devices", 1),
    )
    return fabric.device


def stacking_error(make_net: Callable[[], nn.Module], images: Tensor) -> str | None:
    """Why the networks ``make_net`` builds cannot be trained stacked (e.g. a forward that
    reads values with ``.item()``, which vmap refuses), or None if they can. Tried on two
    throw-away networks and two images; the global RNG is left as it was."""
    try:
        with torch.random.fork_rng(devices=[]):
            probe = StackedNets([make_net(), make_net()], "cpu")
        x = images[:2].detach().cpu().float()
        probe.train(True)
        probe(torch.stack([x, x])).sum().backward()
        probe.predict(x)
    except Exception as err:  # noqa: BLE001 - any failure means: train them one by one
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def train_stacked(
    make_net: Callable[[], nn.Module],
    images: Tensor,
    labels: Tensor,
    eval_cfg: Any,
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
    show_epochs: bool = True,
) -> StackedNets:
    """Train one fresh network per seed together, each exactly as
    :func:`rdd.eval.training.train_eval_net` trains it alone.

    Args:
        make_net: factory of a fresh network (all built networks share one structure).
        images: (N, C, H, W) training images; labels: (N,) int64 or (N, K) probabilities.
        eval_cfg: the `eval` config (epochs, batch_size, lr, momentum, ...).
        seeds: network i's seed, as passed to ``train_eval_net``.
        device: where to train.
        show_epochs: the epochs on a bar once the training has run a few seconds.

    Returns:
        The M = len(seeds) trained networks, in evaluation mode.
    """
    nets = [init_net(make_net, seed) for seed in seeds]
    samplers = [batch_order(len(images), eval_cfg, seed) for seed in seeds]
    generators = [torch.Generator().manual_seed(augment_seed(seed)) for seed in seeds]
    augment = augment_of(eval_cfg)
    stacked = StackedNets(nets, device)
    opt, sched = protocol_optimizer(
        stacked.params.values(), eval_cfg, decay_step(eval_cfg, samplers[0])
    )
    x_all, y_all = images.detach().to(device), labels.detach().to(device)
    stacked.train(True)
    with EpochBar(eval_cfg.epochs, samplers[0].batches_per_epoch, show_epochs) as bar:
        for batches in zip(*samplers, strict=True):  # step s: batch s of every network
            xs, ys = [], []
            for index, generator in zip(batches, generators, strict=True):
                index = index.to(device)
                x = x_all[index]
                xs.append(augment(x, generator) if augment is not None else x)
                ys.append(y_all[index])
            logits = stacked(torch.stack(xs))
            # Each network's loss as it computes it alone; the sum's gradient is each one's own.
            loss = torch.stack([F.cross_entropy(z, y) for z, y in zip(logits, ys, strict=True)])
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sched.step()
            bar.step()
    stacked.train(False)
    return stacked


def stacked_clean_figures(
    stack: StackedNets, data: Any, test_groups: Tensor | None
) -> list[dict[str, Any]]:
    """rdd.eval.scoring.clean_figures of every stacked network, from one pass over each
    split: the same keys, from the same metrics."""
    val_x, val_y = loader_tensors(data.val_dataloader())
    test_x, test_y = loader_tensors(data.test_dataloader())
    val_preds = stack.predict(val_x) if len(val_y) else None
    test_preds = stack.predict(test_x)
    all_figures = []
    for i in range(stack.num_nets):
        figures: dict[str, Any] = {}
        if val_preds is not None:
            figures["val_acc"], _ = class_accuracy(val_preds[i], val_y, data.num_classes)
        test_acc, per_class = class_accuracy(test_preds[i], test_y, data.num_classes)
        figures |= {
            "test_acc": test_acc,
            "worst_class_acc": float(per_class.min()),
            "class_acc": per_class.tolist(),
        }
        if test_groups is not None:
            per_cluster = group_accuracy(test_preds[i] == test_y, test_groups.cpu())
            figures |= {
                "mean_cluster_acc": float(per_cluster.mean()),
                "worst_cluster_acc": float(per_cluster.min()),
                "cluster_acc": per_cluster.tolist(),
            }
        all_figures.append(figures)
    return all_figures


def loader_tensors(loader: DataLoader) -> tuple[Tensor, Tensor]:
    """All (x (N, C, H, W), y (N,)) of an unshuffled loader, in its order, on the CPU."""
    batches = list(loader)
    if not batches:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]).cpu()


def class_accuracy(preds: Tensor, y: Tensor, num_classes: int) -> tuple[float, Tensor]:
    """(accuracy, (K,) per-class accuracy) in percent, by the metric the Lightning path uses."""
    metric = ClassAccuracy(num_classes, sync_on_compute=False)
    metric.update(preds, y)
    return metric.percent()
