"""`python -m rdd.run`: distil a synthetic set, evaluate it, write the run's outputs.

The pipeline, and nothing else: ``prepare`` (the config's checks, once, then seeds, data,
method), ``distill`` (the learner and its Trainer: rdd.distill.fit), the evaluation
(rdd.eval), the outputs (rdd.outputs). Three seams, each callable with a composed config:
``run(cfg) -> metrics`` (everything ``python -m rdd.run`` does), ``prepare(cfg) -> Prepared``
and ``distill(prepared) -> (images, labels, learned lr)`` (the distillation alone).
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

from rdd.checkpoint.preemption import stopped_distillation
from rdd.checkpoint.resume import run_checkpoints
from rdd.checkpoint.state import Checkpoints
from rdd.config.checks import check_config, check_data
from rdd.config.cli import fail_job, quiet_lightning, run_cli
from rdd.config.compose import CONF_DIR, build
from rdd.config.errors import ConfigError, Interrupted, NonFiniteError, UserError
from rdd.config.schemas import register_schemas
from rdd.config.tree import config_tree, print_config_tree
from rdd.data.expected import data_line, size_warning
from rdd.distill.fit import build_learner, fit
from rdd.distill.initial import real_draw
from rdd.eval.settings import eval_protocol, with_learned_lr
from rdd.matching import Matcher
from rdd.nets import checked_net_factory
from rdd.outputs.files import evaluate_into, prepare_output_dir, save_synset, synset_meta
from rdd.outputs.loggers import build_loggers, report_to_loggers
from rdd.outputs.summary import format_summary
from rdd.parallel.launch import is_launched_rank0
from rdd.parallel.shared_cpu import shared_cpu_warning
from rdd.parallel.strategy import apply_determinism, apply_host_memory
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


def prepare(cfg: DictConfig) -> Prepared:
    """Check the config (once: rdd.config.checks), seed every generator, load and check the
    data, build the method and the net factory (one network is built now, so that a bad net
    option fails before distilling)."""
    ipc = check_config(cfg)
    apply_determinism(cfg.trainer)  # before any CUDA work
    apply_host_memory(cfg.trainer)  # before the data is loaded
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = build(cfg.data, "data")
    data.setup()
    check_data(cfg, data, ipc)
    matcher = build(cfg.matching, "matching")
    return Prepared(cfg, ipc, data, matcher, checked_net_factory(cfg.net, data))


def run(cfg: DictConfig) -> dict[str, float]:
    """Distil (or select a coreset), save the set, evaluate it; returns the metrics."""
    quiet_lightning()
    prepared = prepare(cfg)
    out_dir = announce(prepared)
    data, ipc = prepared.data, prepared.ipc
    loggers = build_loggers(cfg)
    protocol = eval_protocol(cfg, data)  # before distilling: a bad setting fails in seconds
    meta = synset_meta(cfg, data, ipc)
    keep = partial(save_synset, out_dir / FILE_NAME, meta, getattr(data, "zca", None))
    checkpoints = run_checkpoints(cfg, out_dir, protocol.test_groups)  # resume=<dir> or auto
    start = time.perf_counter()
    try:
        images, labels, learned_lr = distill(prepared, loggers, keep, checkpoints)
    except NonFiniteError as err:
        raise UserError(
            f"{err}; the last good synthetic set is kept in {out_dir / FILE_NAME}"
        ) from None
    except Interrupted as err:  # Ctrl-C, or SIGTERM/SIGUSR1 at a safe point (preemption)
        raise stopped_distillation(err, checkpoints.path) from None
    distill_seconds = time.perf_counter() - start
    if not is_launched_rank0():
        return {}  # under torchrun/srun: rank 0 saves and evaluates the (identical) set

    if prepared.matcher.whole_dataset:
        # The reference trains on the dataset itself: store only a preview, not a copy of it.
        preview = real_draw(data, ipc, torch.Generator().manual_seed(cfg.seed))
        synset = SyntheticSet(preview, class_grouped_labels(data.num_classes, ipc), meta)
        train_set = (images, labels)
    else:
        synset = keep(images, labels, learned_lr)
        train_set = synset.expanded()
    grid = synset.save_grid(out_dir / GRID_NAME)
    write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    protocol.settings = with_learned_lr(protocol.settings, synset.meta.get("lr"))
    metrics = evaluate_into(
        out_dir, train_set, data, protocol, cfg.seed, distill_seconds, prepared.discovery
    )
    report_to_loggers(loggers, metrics, grid)
    summary = format_summary(cfg, data, metrics, out_dir)
    write_text(out_dir / "summary.txt", summary.lstrip("\n") + "\n")
    log.info(summary)
    return metrics


def announce(prepared: Prepared) -> Path:
    """The config tree, the start line and what was read (a wrong root shows at once, not
    after hours) through logging, which Hydra copies into <run dir>/run.log; returns the
    run directory."""
    cfg, data = prepared.cfg, prepared.data
    if cfg.get("print_config") and is_launched_rank0():
        print_config_tree(cfg)
    out_dir = prepare_output_dir(cfg.paths.output_dir)
    log.info(
        "rdd.run: %s on %s, ipc %s, risk %s, seed %s -> %s",
        *(cfg.matching.name, cfg.data.name, cfg.ipc, cfg.risk.name, cfg.seed, out_dir),
    )
    if (crowded := shared_cpu_warning()) is not None:
        log.warning("warning: %s", crowded)
    log.info(data_line(data))
    if (warning := size_warning(data)) is not None:
        log.warning("warning: %s", warning)
    return out_dir


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
    cfg, data, matcher, ipc = prepared.cfg, prepared.data, prepared.matcher, prepared.ipc
    generator = init_generator(cfg)
    if matcher.whole_dataset:
        return data.train_x, data.train_y, None
    if matcher.is_coreset:
        idx = matcher.select(
            data.train_x, data.train_y, data.num_classes, ipc, generator, prepared.make_net
        )
        return data.train_x[idx].clone(), data.train_y[idx].clone(), None
    learner = build_learner(cfg, data, matcher, prepared.make_net, ipc, generator)
    learner.on_nonfinite = keep
    fit(learner, cfg, loggers, checkpoints)
    # In percent, like every figure of metrics.json.
    prepared.discovery = {k.replace("/", "_"): 100 * v for k, v in learner.discovery.items()}
    return learner.images.detach().cpu(), learner.labels.cpu(), learner.learned_lr


def init_generator(cfg: DictConfig) -> torch.Generator:
    """The generator of the starting set (or the coreset's selection) of seed ``cfg.seed``."""
    return torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except (UserError, Interrupted) as err:
        # A refused config is alike on every rank of torchrun/srun: rank 0 alone says so.
        fail_job(err, alike_on_every_rank=isinstance(err, ConfigError))
    # Kept with the finished run only: a refused run leaves no file of its own.
    if cfg.get("print_config") and is_launched_rank0():
        write_text(Path(cfg.paths.output_dir) / "config_tree.log", config_tree(cfg))
    return metrics.get(cfg.get("optimized_metric"))


register_schemas()

if __name__ == "__main__":
    run_cli(main)
