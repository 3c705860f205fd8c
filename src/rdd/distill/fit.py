"""A distillation's learner built from the run's config, and its Lightning Trainer run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from rdd.checkpoint.preemption import deferred_signals
from rdd.checkpoint.state import Checkpoints
from rdd.config.callbacks import build_callbacks
from rdd.distill.initial import expansion_factor, initial_images
from rdd.distill.learner import SyntheticSetLearner
from rdd.experts import attach_experts
from rdd.experts.training import pick_device
from rdd.matching import Matcher
from rdd.nets.compiled import resolve_compile
from rdd.outputs.loggers import ProgressLog
from rdd.parallel.class_parallel import (
    check_class_parallel,
    check_one_forward_per_class,
    check_ranks_for_classes,
)
from rdd.parallel.strategy import distill_strategy, trainer_kwargs
from rdd.robust.ownership import AllocationSettings
from rdd.robust.plan import build_clusterer, build_risk, plan_for

log = logging.getLogger(__name__)


def build_learner(
    cfg: DictConfig,
    data: Any,
    matcher: Matcher,
    make_net: Callable[[], nn.Module],
    ipc: int,
    generator: torch.Generator,
) -> SyntheticSetLearner:
    """The learner of a distillation (not a coreset): its starting set, the robust layer's
    plan, MTT's experts, and DDP's class-parallel mode where the config asks for it."""
    plan = plan_for(cfg, matcher, ipc, torch.bincount(data.train_y, minlength=data.num_classes))
    device_type = pick_device(cfg.trainer.accelerator).type
    compile_where_it_repays(matcher, tuple(data.train_x.shape[-2:]), ipc, device_type)
    if matcher.needs_experts:
        attach_experts(cfg, data, matcher)
    learner = SyntheticSetLearner(
        matcher,
        make_net,
        initial_images(data, ipc, matcher.init, generator, expansion_factor(matcher, data)),
        data.train_x,
        data.train_y,
        data.num_classes,
        ipc,
        cfg.seed,
        risk=build_risk(cfg.risk),
        clusterer=build_clusterer(cfg.clustering, data) if plan.active else None,
        plan=plan,
        allocation=AllocationSettings.from_config(cfg.robust),
        altered=data.train_subgroup,
    )
    if check_class_parallel(cfg):
        check_ranks_for_classes(cfg.trainer, data.num_classes)
        with torch.random.fork_rng(devices=[]):  # a probe net must not move the global RNG
            check_one_forward_per_class(matcher, make_net(), learner)
        learner.class_parallel = True
    return learner


def compile_where_it_repays(
    matcher: Matcher, image_size: tuple[int, int], ipc: int, device_type: str = "cpu"
) -> None:
    """Settle ``matching.compile_nets=auto`` for this run on ``device_type``
    (rdd.nets.compiled.resolve_compile): the real-batch passes per class are DM/IDM's
    iterations, DC/DSA's x their outer loops."""
    if not hasattr(matcher, "compile_nets"):
        return  # MTT and the coresets run no first-order passes to compile
    outer = matcher.loops(ipc)[0] if hasattr(matcher, "loops") else 1
    passes = matcher.iterations * outer
    on, notice = resolve_compile(matcher.compile_nets, image_size, passes, device_type)
    matcher.compile_nets = on
    if getattr(matcher, "queue", None) is not None:
        matcher.queue.compile_nets = on  # IDM's queue networks train through the same passes
    if notice:
        log.warning("warning: %s", notice)


def fit(
    learner: SyntheticSetLearner,
    cfg: DictConfig,
    loggers: Sequence[Any] = (),
    checkpoints: Checkpoints | None = None,
) -> None:
    """Every iteration of the distillation under one Lightning Trainer, checkpointed as
    ``checkpoints`` says (SIGTERM/SIGUSR1 wait for a safe point with a checkpoint to write)."""
    callbacks = checkpoints.attach(learner, loggers) if checkpoints is not None else []
    callbacks += build_callbacks(cfg)  # conf/callbacks
    settings = trainer_kwargs(cfg.trainer)
    learner.show_progress = bool(settings.get("enable_progress_bar", True))
    trainer = L.Trainer(
        max_epochs=1,
        logger=list(loggers) or False,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        # Every rank runs every iteration (the "batches" are iteration numbers, not data).
        use_distributed_sampler=False,
        callbacks=[*callbacks, ProgressLog()],
        **(settings | {"strategy": distill_strategy(settings["strategy"])}),
    )
    with deferred_signals(trainer, active=checkpoints is not None):
        trainer.fit(learner)
    if checkpoints is not None:
        checkpoints.finish()  # the finished set replaces the checkpoint
