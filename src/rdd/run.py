"""`python -m rdd.run`: distil a synthetic set, evaluate it, write the run's outputs.

The pipeline, and nothing else (its parts live in their own modules: rdd.checkpoint.state,
rdd.distill.initial, rdd.outputs.files, rdd.eval.settings, rdd.outputs.loggers). Three seams, each callable with a
composed config: ``run(cfg) -> metrics`` (everything ``python -m rdd.run`` does),
``prepare(cfg) -> Prepared`` (checked config, seeded, data loaded, method and net factory
built) and ``distill(prepared) -> (images, labels, learned lr)`` (the distillation alone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rdd.checkpoint.preemption import deferred_signals, stopped_distillation
from rdd.checkpoint.resume import run_checkpoints
from rdd.checkpoint.state import Checkpoints
from rdd.config.callbacks import build_callbacks
from rdd.config.cli import check_ipc, fail_job, quiet_lightning, run_cli
from rdd.config.compose import CONF_DIR, build
from rdd.config.errors import Interrupted, NonFiniteError, UserError
from rdd.config.schemas import register_schemas
from rdd.config.tree import config_tree, print_config_tree
from rdd.data.expected import data_line, size_warning
from rdd.distill.initial import check_class_sizes, expansion_factor, initial_images, real_draw
from rdd.distill.learner import SyntheticSetLearner
from rdd.eval.scoring import Evaluation, evaluate_synset
from rdd.eval.settings import (
    check_eval,
    eval_nets,
    eval_settings,
    eval_trainer_kwargs,
    partition_of,
    with_learned_lr,
)
from rdd.eval.shifted_sets import shifted_test_sets
from rdd.experts import attach_experts
from rdd.matching import Matcher
from rdd.nets import checked_net_factory
from rdd.outputs.files import (
    interrupted_evaluation,
    prepare_output_dir,
    save_synset,
    synset_meta,
    write_eval_outputs,
)
from rdd.outputs.loggers import ProgressLog, build_loggers, report_to_loggers
from rdd.outputs.summary import format_summary
from rdd.parallel.class_parallel import (
    check_class_parallel,
    check_one_forward_per_class,
    check_ranks_for_classes,
)
from rdd.parallel.launch import check_num_nodes, is_launched_rank0
from rdd.parallel.shared_cpu import shared_cpu_warning
from rdd.parallel.strategy import apply_determinism, distill_strategy, trainer_kwargs
from rdd.robust.ownership import AllocationSettings
from rdd.robust.plan import (
    build_clusterer,
    build_risk,
    check_min_per_group,
    check_robust_node,
    plan_for,
)
from rdd.synset import FILE_NAME, GRID_NAME, SyntheticSet, class_grouped_labels
from rdd.utils.io import write_text
from rdd.utils.seeds import derived_seed

log = logging.getLogger("rdd.run")  # named so in run.log under python -m too, not __main__


@dataclass
class Prepared:
    """What a distillation needs, built from the config as ``rdd.run`` builds it."""

    cfg: DictConfig
    ipc: int
    data: Any  # a set-up rdd.data.DataModule
    matcher: Matcher
    make_net: Callable[[], nn.Module]
    # Filled by distill: how well the clustering found data.subgroup's rare images.
    discovery: dict[str, float] = field(default_factory=dict)


def check_config(cfg: DictConfig) -> int:
    """What can be checked before any work (a bad value fails in a second); returns ipc."""
    ipc = check_ipc(cfg.ipc)
    check_robust_node(cfg)
    check_seed(cfg.seed)
    check_checkpoint_every(cfg.get("checkpoint_every"))
    trainer_kwargs(cfg.trainer)  # a GPU trainer without a GPU, an unsupported strategy
    check_num_nodes(cfg.trainer)  # trainer.num_nodes against torchrun's / srun's world
    check_class_parallel(cfg)
    build(cfg.data, "data").check_source()  # the root holds the dataset, before any decoding
    build(cfg.matching, "matching")  # its constructor checks its values (iterations > 0, ...)
    check_eval(cfg)  # not only once the distillation has finished
    return ipc


def prepare(cfg: DictConfig) -> Prepared:
    """Check the config, seed every generator, load the data, build the method and the net
    factory (one network is built now, so that a bad net option fails before distilling)."""
    ipc = check_config(cfg)
    apply_determinism(cfg.trainer)  # before any CUDA work
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = build(cfg.data, "data")
    data.setup()
    matcher = build(cfg.matching, "matching")
    return Prepared(cfg, ipc, data, matcher, checked_net_factory(cfg.net, data))


def run(cfg: DictConfig) -> dict[str, float]:
    """Distil (or select a coreset), save the set, evaluate it; returns the metrics."""
    quiet_lightning()
    check_config(cfg)
    out_dir = prepare_output_dir(cfg.paths.output_dir)
    # Through logging, not print: Hydra's job logging copies every line into <run dir>/run.log.
    log.info(
        "rdd.run: %s on %s, ipc %s, risk %s, seed %s -> %s",
        *(cfg.matching.name, cfg.data.name, cfg.ipc, cfg.risk.name, cfg.seed, out_dir),
    )
    if (crowded := shared_cpu_warning()) is not None:
        log.warning("warning: %s", crowded)
    prepared = prepare(cfg)
    data, matcher, ipc = prepared.data, prepared.matcher, prepared.ipc
    log.info(data_line(data))  # what was read: a wrong root shows at once, not after hours
    if (warning := size_warning(data)) is not None:
        log.warning("warning: %s", warning)
    loggers = build_loggers(cfg)
    # Resolved before distilling so that a bad evaluation setting fails in seconds, not hours.
    nets, settings, eval_trainer = (
        eval_nets(cfg, data),
        eval_settings(cfg, data),
        eval_trainer_kwargs(cfg),
    )
    test_groups = partition_of(data, settings)
    shifted = shifted_test_sets(data, settings)

    meta = synset_meta(cfg, data, ipc)
    keep = partial(save_synset, out_dir / FILE_NAME, meta, getattr(data, "zca", None))
    checkpoints = run_checkpoints(cfg, out_dir, test_groups)  # resume=<dir> or auto
    start = time.perf_counter()
    try:
        images, labels, learned_lr = distill(prepared, loggers, keep, checkpoints)
    except NonFiniteError as err:
        raise UserError(
            f"{err}; the last good synthetic set is kept in {out_dir / FILE_NAME}"
        ) from None
    except (
        Interrupted
    ) as err:  # Ctrl-C, or SIGTERM/SIGUSR1 at a safe point (rdd.checkpoint.preemption)
        raise stopped_distillation(err, checkpoints.path) from None
    distill_seconds = time.perf_counter() - start
    if not is_launched_rank0():
        return {}  # under torchrun/srun: rank 0 saves and evaluates the (identical) set

    if matcher.whole_dataset:
        # The reference trains on the dataset itself: store only a preview, not a copy of it.
        preview = real_draw(data, ipc, torch.Generator().manual_seed(cfg.seed))
        synset = SyntheticSet(preview, class_grouped_labels(data.num_classes, ipc), meta)
        train_set = (images, labels)
    else:
        synset = keep(images, labels, learned_lr)
        train_set = synset.expanded()
    grid = synset.save_grid(out_dir / GRID_NAME)
    write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    settings = with_learned_lr(settings, synset.meta.get("lr"))

    start = time.perf_counter()
    metrics: dict[str, Any] = {}

    def write_metrics(evaluation: Evaluation, complete: bool) -> None:
        # Rewritten as figures arrive: an interrupted evaluation keeps what it computed.
        seconds = {"distill_seconds": distill_seconds, "eval_seconds": time.perf_counter() - start}
        metrics.clear()
        metrics.update(dict(evaluation) | seconds | {"eval_complete": complete})
        metrics.update(prepared.discovery)
        write_eval_outputs(out_dir, metrics, evaluation, data, settings)

    try:
        evaluate_synset(
            *train_set,
            data,
            nets,
            settings,
            eval_trainer,
            cfg.seed,
            test_groups,
            shifted,
            known_group=data.subgroup_test_set,
            on_update=write_metrics,
        )
    except Interrupted as err:
        raise err.again(interrupted_evaluation(out_dir, bool(metrics))) from None
    report_to_loggers(loggers, metrics, grid)
    summary = format_summary(cfg, data, metrics, out_dir)
    write_text(out_dir / "summary.txt", summary.lstrip("\n") + "\n")
    log.info(summary)
    return metrics


def check_checkpoint_every(every: Any) -> None:
    """checkpoint_every is a number of iterations (0 or null: no checkpoints)."""
    if every is None:
        return
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise UserError(
            f"checkpoint_every must be a number of iterations >= 0 (0: no checkpoints), got "
            f"'{every}': set e.g. checkpoint_every=50"
        )


def check_seed(seed: Any) -> int:
    """The seed must be a non-negative integer (it seeds every random draw)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got '{seed}': set e.g. seed=0")
    return seed


def distill(
    prepared: Prepared,
    loggers: Sequence[Any] = (),
    keep: Callable | None = None,
    checkpoints: Checkpoints | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """Run the matching method; returns images (K*ipc, C, H, W), labels (K*ipc,) and MTT's
    learned step size (None for other methods).

    ``keep(images, labels, lr, iteration)`` saves the last good set if the run hits NaN/Inf;
    ``checkpoints`` says where and how often to checkpoint, and the state to resume from.
    """
    cfg, data, matcher, make_net = prepared.cfg, prepared.data, prepared.matcher, prepared.make_net
    ipc = prepared.ipc
    check_class_sizes(data, ipc)
    generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))
    if matcher.whole_dataset:
        return data.train_x, data.train_y, None
    if matcher.is_coreset:
        idx = matcher.select(data.train_x, data.train_y, data.num_classes, ipc, generator, make_net)
        return data.train_x[idx].clone(), data.train_y[idx].clone(), None
    risk = build_risk(cfg.risk)  # a bad risk parameter fails before the subgroup checks
    plan = plan_for(cfg, matcher, ipc, torch.bincount(data.train_y, minlength=data.num_classes))
    check_min_per_group(cfg, data)
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
        risk=risk,
        clusterer=build_clusterer(cfg.clustering, data) if plan.active else None,
        plan=plan,
        allocation=AllocationSettings.from_config(cfg.robust),
        altered=data.train_subgroup,
    )
    learner.on_nonfinite = keep
    if check_class_parallel(cfg):
        check_ranks_for_classes(cfg.trainer, data.num_classes)
        with torch.random.fork_rng(devices=[]):  # a probe net must not move the global RNG
            check_one_forward_per_class(matcher, make_net(), learner)
        learner.class_parallel = True
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
    # SIGTERM/SIGUSR1 wait for a safe point where there is a checkpoint to write.
    with deferred_signals(trainer, active=checkpoints is not None):
        trainer.fit(learner)
    if checkpoints is not None:
        checkpoints.finish()  # the finished set replaces the checkpoint
    # In percent, like every figure of metrics.json.
    prepared.discovery = {k.replace("/", "_"): 100 * v for k, v in learner.discovery.items()}
    return learner.images.detach().cpu(), learner.labels.cpu(), learner.learned_lr


# -- checkpoints and resume -------------------------------------------------------------------


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def main(cfg: DictConfig) -> float | None:
    show_tree = cfg.get("print_config") and is_launched_rank0()
    try:
        check_config(cfg)  # a bad value is one line, not the end of the config tree
    except UserError as err:
        fail_job(err, alike_on_every_rank=True)  # under torchrun/srun: from rank 0 only
    if show_tree:
        print_config_tree(cfg)
    try:
        metrics = run(cfg)
    except (UserError, Interrupted) as err:
        fail_job(err)
    # Kept with the finished run only: a refused run leaves no file of its own.
    if show_tree:
        write_text(Path(cfg.paths.output_dir) / "config_tree.log", config_tree(cfg))
    return metrics.get(cfg.get("optimized_metric"))


register_schemas()

if __name__ == "__main__":
    run_cli(main)
