"""Training the expert trajectories that MTT matches (what `python -m rdd.buffer` runs).

Trains ``experts.num_experts`` networks for ``experts.epochs`` epochs on the real training data
(SGD, DSA with independent parameters per image, ZCA when ``data.zca=true``) and saves each
expert's parameters at the start and after every epoch. With a risk that acts on networks the
experts minimise the group risk over k-means subgroups of the real data (robust experts). A
killed run continues where it stopped: finished experts are kept and an unfinished one resumes
from its last epoch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from rdd.augment import DSA
from rdd.config.cli import quiet_lightning
from rdd.config.compose import build
from rdd.config.errors import UserError
from rdd.distill.realpool import RealPool
from rdd.experts.store import ExpertStore, experts_train_on_risk, store_for
from rdd.experts.trajectories import flat_parameters
from rdd.matching.robust import real_data_loss
from rdd.matching.trajectory import TrajectoryMatching
from rdd.nets import net_factory
from rdd.outputs.summary import plural
from rdd.parallel.strategy import apply_host_memory
from rdd.robust.plan import RiskSlots, build_clusterer, build_risk, check_robust_node
from rdd.utils.seeds import derived_seed

log = logging.getLogger(__name__)


def make_buffer(cfg: DictConfig) -> ExpertStore:
    """Train every missing expert of the buffer for ``cfg``; returns its store."""
    quiet_lightning()
    check_settings(cfg.experts)
    check_mtt_settings(cfg)
    check_robust_node(cfg)
    apply_host_memory(cfg.trainer)
    data = build(cfg.data, "data")
    data.setup()
    store = store_for(cfg, data)
    store.claim()
    trainer = ExpertTrainer(cfg, data, pick_device(cfg.trainer.accelerator))
    todo = [i for i in range(cfg.experts.num_experts) if not store.expert_path(i).exists()]
    epochs = cfg.experts.epochs
    done = cfg.experts.num_experts - len(todo)
    experts = f"{plural(cfg.experts.num_experts, 'expert')} x {plural(epochs, 'epoch')}"
    # Through logging: the console, and buffer.log in the run directory (Hydra's job log).
    log.info("rdd.buffer: %s (%d already made) -> %s", experts, done, store.directory)
    with tqdm(
        total=cfg.experts.num_experts * epochs, initial=done * epochs, desc="experts", unit="epoch"
    ) as bar:
        for index in todo:
            trainer.train(index, store, bar)
    log.info("%s in %s", experts, store.directory)
    return store


def check_settings(experts: Any) -> None:
    for key in ("num_experts", "epochs", "batch_size", "recluster_every"):
        if experts[key] < 1:
            raise UserError(f"experts.{key} must be >= 1, got {experts[key]}")
    if experts.lr <= 0:
        raise UserError(f"experts.lr must be positive, got {experts.lr}")


def check_mtt_settings(cfg: DictConfig) -> None:
    """Refuse, before any expert trains, a buffer that ``rdd.run`` with the same overrides
    would refuse: the MTT matcher is built (its own checks) and checks the expert length."""
    matcher = build(cfg.matching, "matching")
    if not isinstance(matcher, TrajectoryMatching):
        raise UserError(
            f"rdd.buffer makes expert trajectories for MTT, not matching={matcher.name}: add "
            "matching=mtt (with the matching.* overrides of the rdd.run that will use them)"
        )
    matcher.check_expert_epochs(cfg.experts.epochs, made=False)


def pick_device(accelerator: str) -> torch.device:
    """The device `trainer.accelerator` names (auto: a GPU when there is one)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


class ExpertTrainer:
    """Trains one expert at a time, saving a resumable checkpoint after every epoch."""

    def __init__(self, cfg: DictConfig, data: Any, device: torch.device) -> None:
        self.settings = cfg.experts
        self.make_net = net_factory(cfg.net, data)
        self.num_classes, self.device = data.num_classes, device
        self.train_x, self.train_y = data.train_x.to(device), data.train_y.to(device)
        strategy = self.settings.dsa_strategy or data.dsa_strategy
        self.augment = DSA(strategy, mode="single") if self.settings.dsa else None
        self.risks = self.clusterer = None
        if experts_train_on_risk(cfg):
            if not cfg.clustering.get("_target_") or cfg.clustering.name == "nearest_synthetic":
                raise UserError(
                    "robust experts need subgroups of the real data without a synthetic set: "
                    "add clustering=faiss_kmeans (or clustering=known with data.subgroup)"
                )
            self.risks = RiskSlots(build_risk(cfg.risk))
            self.clusterer = build_clusterer(cfg.clustering, data)
        self.pool = RealPool(self.train_y, self.num_classes)
        self.groups = self.pool.groups.to(device)

    def train(self, index: int, store: ExpertStore, bar: tqdm) -> None:
        """Train expert ``index`` (resuming its checkpoint if there is one) and save it."""
        seed = derived_seed(self.settings.seed, "expert", index)
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.make_net().to(self.device)
        opt = torch.optim.SGD(
            net.parameters(),
            lr=self.settings.lr,
            momentum=self.settings.momentum,
            weight_decay=self.settings.weight_decay,
        )
        snapshots, first = [flat_parameters(net)], 0
        state = store.load_partial(index)
        if state is not None:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["optimizer"])
            self.load_groups(state)
            generator.set_state(state["generator"])
            snapshots, first = list(state["params"]), int(state["epoch"])
            bar.update(first)
        for epoch in range(first, self.settings.epochs):
            self.train_epoch(net, opt, generator, epoch)
            snapshots.append(flat_parameters(net))
            store.save_partial(
                index,
                {
                    "params": torch.stack(snapshots),
                    "net": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": generator.get_state(),
                    "epoch": epoch + 1,
                    **self.groups_state(),
                },
            )
            bar.update(1)
        store.save_expert(
            index, torch.stack(snapshots), [name for name, _ in net.named_parameters()]
        )

    def train_epoch(
        self, net: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator, epoch: int
    ) -> None:
        """One pass over the shuffled training data; the group risk for robust experts."""
        if self.clusterer is not None and epoch % self.settings.recluster_every == 0:
            self.regroup(net, epoch)
        net.train()
        order = torch.randperm(len(self.train_y), generator=generator)
        for batch in order.split(self.settings.batch_size):
            batch = batch.to(self.device)
            x, y = self.train_x[batch], self.train_y[batch]
            if self.augment is not None:
                x = self.augment(x, generator)
            num_groups = self.pool.num_groups
            risk = None if self.risks is None else self.risks.get("networks", None, num_groups)
            loss, _, _ = real_data_loss(net, x, y, self.groups[batch], num_groups, risk)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def regroup(self, net: nn.Module, epoch: int) -> None:
        """Refit the subgroups in the expert's current feature space (as a learner does)."""
        net.eval()
        with torch.no_grad():
            self.pool.refit(self.clusterer, self.train_x, net, epoch)
        self.groups = self.pool.groups.to(self.device)
        if not self.clusterer.ids_persist:
            self.risks.reset()  # the new ids name other subgroups: restart the risk

    def groups_state(self) -> dict:
        """Robust experts: the subgroups and the risk's running state, so that a resumed
        expert continues exactly (they change only at a re-clustering)."""
        if self.risks is None:
            return {}
        return {"pool": self.pool.state(), "risks": self.risks.state()}

    def load_groups(self, state: dict) -> None:
        if self.risks is not None and "pool" in state:
            self.pool.load_state(state["pool"])
            self.groups = self.pool.groups.to(self.device)
            self.risks.load_state(state["risks"])
