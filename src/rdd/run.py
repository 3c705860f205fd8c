"""`python -m rdd.run`: distil a synthetic set, evaluate it, write the run's outputs.

The Hydra entry point is a thin ``main`` around ``run(cfg) -> metrics`` so that tests and
scripts call ``run`` directly with a composed config.
"""

from __future__ import annotations

import csv
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from rdd.cli import check_ipc, fail, quiet_lightning, run_cli
from rdd.config import CONF_DIR, build, check_fresh, flatten
from rdd.errors import NonFiniteError, UserError
from rdd.evaluator import derived_seed, evaluate_synset
from rdd.expansion import check_factor, pack
from rdd.experts import ExpertStore, Trajectories, buffer_key
from rdd.io import tensor_digest, write_json, write_text
from rdd.learner import CHECKPOINT_FORMAT, SyntheticSetLearner
from rdd.nets import build_net, load_net_config
from rdd.partition import partition_test_set
from rdd.robust import build_clusterer, build_risk, check_robust_node, plan_for
from rdd.schemas import register_schemas
from rdd.shifted import check_shift_settings, shifted_test_sets
from rdd.strategy import DDP_NAMES, distill_strategy
from rdd.summary import format_summary
from rdd.synset import FILE_NAME, GRID_NAME, SyntheticSet, class_grouped_labels

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, float]:
    """Distil (or select a coreset), save the set, evaluate it; returns the metrics."""
    quiet_lightning()
    ipc = check_ipc(cfg.ipc)
    check_robust_node(cfg)
    out_dir = prepare_output_dir(cfg.paths.output_dir)
    L.seed_everything(check_seed(cfg.seed), workers=True, verbose=False)
    data = build(cfg.data, "data")
    data.setup()
    matcher = build(cfg.matching, "matching")
    loggers = build_loggers(cfg)
    make_net = checked_net_factory(cfg.net, data)
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
    checkpoints = Checkpoints(
        out_dir / CHECKPOINT_NAME,
        int(cfg.get("checkpoint_every") or 0),
        {"config": run_identity(cfg), "test_partition": tensor_digest(test_groups)},
        load_checkpoint(cfg.resume, cfg, test_groups) if cfg.get("resume") else None,
    )
    start = time.perf_counter()
    try:
        images, labels, learned_lr = distill(
            cfg, data, matcher, make_net, loggers, ipc, keep, checkpoints
        )
    except NonFiniteError as err:
        raise UserError(
            f"{err}; the last good synthetic set is kept in {out_dir / FILE_NAME}"
        ) from None
    distill_seconds = time.perf_counter() - start

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
    evaluation = evaluate_synset(
        *train_set,
        data,
        nets,
        settings,
        eval_trainer,
        cfg.seed,
        test_groups,
        shifted,
        known_group=data.subgroup_test_set,
    )
    metrics = dict(evaluation)
    metrics |= {"distill_seconds": distill_seconds, "eval_seconds": time.perf_counter() - start}
    write_eval_outputs(out_dir, metrics, evaluation, data, settings)
    report_to_loggers(loggers, metrics, grid)
    print(format_summary(cfg, data, metrics, out_dir))
    return metrics


def write_eval_outputs(
    out_dir: Path, metrics: dict[str, float], evaluation: Any, data: Any, settings: DictConfig
) -> None:
    """metrics.json (flat floats) and eval_details.json (per-network cluster/class accuracy)."""
    details = {
        "archs": evaluation.details,
        "class_names": list(data.class_names),
        "shifts": list(settings.get("shifts") or []),
        "corruptions": {
            name: list(settings.get("severities") or [])
            for name in settings.get("corruptions") or []
        },
        "subgroup": None if data.subgroup is None else data.subgroup.key(),
    }
    write_json(out_dir / "eval_details.json", details)
    write_json(out_dir / "metrics.json", metrics)


def prepare_output_dir(path: str | Path) -> Path:
    """The run directory; refuses one that already holds a finished run (nothing is overwritten)."""
    out_dir = Path(path)
    check_fresh(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def net_factory(net_cfg: Any, data: Any) -> Callable[[], torch.nn.Module]:
    """A function building a fresh network for this dataset's shape (picklable, for DDP's
    spawned processes)."""
    return partial(build_net, net_cfg, data.channel, data.num_classes, tuple(data.im_size))


def check_seed(seed: Any) -> int:
    """The seed must be a non-negative integer (it seeds every random draw)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got '{seed}': set e.g. seed=0")
    return seed


def checked_net_factory(net_cfg: Any, data: Any) -> Callable[[], torch.nn.Module]:
    """The run's net factory, after building one network: a bad net option fails now, not
    after the data is clustered or an hour of distillation."""
    make_net = net_factory(net_cfg, data)
    try:
        make_net()
    except ValueError as err:  # the nets' option checks (UserError is one)
        raise UserError(f"invalid net setting: {err}") from None
    return make_net


def distill(
    cfg,
    data,
    matcher,
    make_net,
    loggers,
    ipc: int,
    keep: Callable | None = None,
    checkpoints: Checkpoints | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """Run the matching method; returns images (K*ipc, C, H, W), labels (K*ipc,) and MTT's
    learned step size (None for other methods).

    ``keep(images, labels, lr, iteration)`` saves the last good set if the run hits NaN/Inf;
    ``checkpoints`` says where and how often to checkpoint, and the state to resume from.
    """
    check_class_sizes(data, ipc)
    generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))
    if matcher.whole_dataset:
        return data.train_x, data.train_y, None
    if matcher.is_coreset:
        idx = matcher.select(data.train_x, data.train_y, data.num_classes, ipc, generator, make_net)
        return data.train_x[idx].clone(), data.train_y[idx].clone(), None
    plan = plan_for(cfg, matcher, ipc, torch.bincount(data.train_y, minlength=data.num_classes))
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
    )
    learner.on_nonfinite = keep
    if checkpoints is not None:
        checkpoints.attach(learner)
    settings = trainer_kwargs(cfg.trainer)
    trainer = L.Trainer(
        max_epochs=1,
        logger=loggers or False,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        # Every rank runs every iteration (the "batches" are iteration numbers, not data).
        use_distributed_sampler=False,
        **(settings | {"strategy": distill_strategy(settings["strategy"])}),
    )
    trainer.fit(learner)
    if checkpoints is not None:
        checkpoints.path.unlink(missing_ok=True)  # the finished set replaces it
    return learner.images.detach().cpu(), learner.labels.cpu(), learner.learned_lr


# -- checkpoints and resume -------------------------------------------------------------------
CHECKPOINT_NAME = "checkpoint.pt"
# Keys that may differ between a run and its resumption: where things go, how they are shown
# and on which devices (the result is bitwise equal on the same device type; see README).
VOLATILE_KEYS = ("paths", "hydra", "logger", "trainer", "resume", "checkpoint_every")


@dataclass
class Checkpoints:
    """Where a run checkpoints, how often, what it stores beside the state, and the state of
    a killed run to continue from (or None)."""

    path: Path
    every: int
    meta: dict[str, Any]
    resume_state: dict[str, Any] | None = None

    def attach(self, learner: SyntheticSetLearner) -> None:
        learner.checkpoint_path, learner.checkpoint_every = self.path, self.every
        learner.checkpoint_meta = self.meta
        if self.resume_state is not None:
            learner.load_training_state(self.resume_state)


def run_identity(cfg: DictConfig) -> str:
    """The resolved config without the keys a resumption may change (VOLATILE_KEYS, and where
    the caches live)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in VOLATILE_KEYS:
        resolved.pop(key, None)
    for group, key in (("data", "cache_dir"), ("experts", "root")):
        (resolved.get(group) or {}).pop(key, None)
    return OmegaConf.to_yaml(OmegaConf.create(resolved), sort_keys=True)


def load_checkpoint(where: str, cfg: DictConfig, test_groups: torch.Tensor | None) -> dict:
    """The checkpoint of the killed run at ``where`` (its directory or the file), checked
    against this run's config and test partition.

    Raises:
        UserError: no checkpoint, an unreadable or foreign file, or a different config.
    """
    if cfg.trainer.get("strategy") in DDP_NAMES:
        # Measured: resumed under 2 gloo ranks, a DC+CVaR set ended 0.02 away from the
        # uninterrupted run (a fresh DDP run is 1e-5 away); until that is understood, refuse.
        raise UserError(
            "resume under trainer=ddp is not supported yet: resume on one device "
            "(trainer=cpu or trainer=gpu); the checkpoint does not depend on the device count"
        )
    path = Path(where)
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    if not path.is_file():
        raise UserError(
            f"no checkpoint at '{path}': resume=<the killed run's directory> (a run writes "
            f"{CHECKPOINT_NAME} every checkpoint_every iterations and removes it when it ends)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...: torch raises many kinds
        raise UserError(
            f"cannot read the checkpoint '{path}' ({str(err).splitlines()[0][:150]}): it is "
            "damaged or not an rdd checkpoint; start the run again"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"'{path}' is not an rdd checkpoint: give a run directory of rdd.run")
    meta, identity = state.get("meta", {}), run_identity(cfg)
    if meta.get("config") != identity:
        changed = config_differences(meta.get("config", ""), identity)
        raise UserError(
            f"the checkpoint '{path}' was made with another config (differs in "
            f"{', '.join(changed[:5]) or 'its layout'}): resume with the killed run's overrides"
        )
    if meta.get("test_partition") != tensor_digest(test_groups):
        raise UserError(
            f"the test partition differs from the one of the checkpoint '{path}' (the test "
            "set or eval.partition changed): resume with the same data and eval settings"
        )
    return state


def config_differences(old: str, new: str) -> list[str]:
    """Dotted keys whose values differ between two YAML configs."""
    flat_old = flatten(OmegaConf.to_container(OmegaConf.create(old or "{}")))
    flat_new = flatten(OmegaConf.to_container(OmegaConf.create(new)))
    return sorted(
        k for k in flat_old.keys() | flat_new.keys() if flat_old.get(k) != flat_new.get(k)
    )


def save_synset(
    path: Path,
    meta: dict[str, Any],
    zca: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    lr: float | None = None,
    stopped_at: int | None = None,
) -> SyntheticSet:
    """Write the set (with its ZCA and MTT's learned step size) atomically; returns it."""
    meta = meta | {"lr": lr}
    if stopped_at is not None:  # the last good set of a run stopped by NaN/Inf
        meta["stopped_at_iteration"] = int(stopped_at)
    synset = SyntheticSet(images, labels, meta, zca=zca)
    synset.save(path)
    return synset


def attach_experts(cfg: DictConfig, data: Any, matcher: Any) -> None:
    """Give MTT the expert trajectories made for this config, or say how to make them."""
    store = ExpertStore.locate(cfg.experts.root, buffer_key(cfg, data, net_name(cfg)))
    paths = store.finished()
    if not paths:
        raise UserError(
            f"no expert trajectories for this config in '{store.directory}': make them first "
            f"with `{buffer_command()}`"
        )
    matcher.attach(Trajectories(paths))


def buffer_command() -> str:
    """The `rdd.buffer` command line with this run's overrides (they select the buffer)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "python -m rdd.buffer <the overrides of this run>"
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    return shlex.join(["python", "-m", "rdd.buffer", *overrides])


def with_learned_lr(settings: DictConfig, lr: float | None) -> DictConfig:
    """Evaluation networks train with MTT's learned step size, as published, unless
    ``eval.lr_from_synset=false``."""
    if lr is None or not settings.get("lr_from_synset", True):
        return settings
    return OmegaConf.merge(settings, {"lr": float(lr)})


def check_class_sizes(data: Any, ipc: int) -> None:
    counts = torch.bincount(data.train_y, minlength=data.num_classes)
    if int(counts.min()) < ipc:
        c = int(counts.argmin())
        raise UserError(
            f"class '{data.class_names[c]}' has {int(counts.min())} training images, fewer than "
            f"ipc={ipc}: lower ipc"
        )


def initial_images(
    data: Any, ipc: int, init: str, generator: torch.Generator, factor: int = 1
) -> torch.Tensor:
    """Starting images grouped by class: random real images of each class, or N(0, 1) noise.

    With partition-and-expansion (``factor > 1``) each image packs ``factor**2`` downscaled
    real images of its class, each tile from its own random draw.
    """
    shape = (data.num_classes * ipc, data.channel, *data.im_size)
    if init == "noise":
        return torch.randn(shape, generator=generator)
    return pack([real_draw(data, ipc, generator) for _ in range(factor * factor)], factor)


def real_draw(data: Any, ipc: int, generator: torch.Generator) -> torch.Tensor:
    """ipc random real images of every class, grouped by class."""
    picks = []
    for c in range(data.num_classes):
        members = (data.train_y == c).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
    return data.train_x[torch.cat(picks)]


def expansion_factor(matcher: Any, data: Any) -> int:
    """The matcher's partition-and-expansion factor, checked against the image size."""
    try:
        return check_factor(matcher.factor, tuple(data.im_size))
    except ValueError as err:
        raise UserError(str(err)) from None


def trainer_kwargs(trainer_cfg: Any) -> dict[str, Any]:
    settings = dict(OmegaConf.to_container(trainer_cfg, resolve=True))
    distill_strategy(settings.get("strategy"))  # an unsupported strategy fails before any work
    return settings


def eval_trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Evaluation networks train one at a time on one device, whatever the distillation used."""
    # The evaluator shows one bar over networks instead of Lightning's bar per network.
    settings = trainer_kwargs(cfg.trainer) | {"devices": 1, "strategy": "auto"}
    settings.pop("enable_progress_bar")
    return settings


def eval_settings(cfg: DictConfig, data: Any) -> DictConfig:
    """The `eval` config with its dataset-dependent defaults filled in."""
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    settings["dsa_strategy"] = settings["dsa_strategy"] or data.dsa_strategy
    for key in ("num_nets", "epochs", "batch_size", "lr"):
        if settings[key] <= 0:
            raise UserError(f"eval.{key} must be positive, got {settings[key]}")
    for key, low, high in (("momentum", 0, 1), ("weight_decay", 0, float("inf"))):
        if not low <= settings[key] < high:
            raise UserError(f"eval.{key} must lie in [{low}, {high}), got {settings[key]}")
    if not 0 < settings["lr_decay_at"] <= 1:
        raise UserError(
            f"eval.lr_decay_at is a fraction of the epochs in (0, 1], got {settings['lr_decay_at']}"
        )
    check_shift_settings(settings)
    return OmegaConf.create(settings)


def partition_of(data: Any, settings: DictConfig) -> torch.Tensor:
    """The cached test partition of this dataset (identical for every method and run)."""
    part = settings.partition
    net_name = part.get("net") or "convnet"
    net_cfg = load_net_config(net_name)
    return partition_test_set(
        data.test_uint8,
        part.k,
        part.seed,
        part.features,
        data.cache_dir,
        make_net=net_factory(net_cfg, data),
        net_id=OmegaConf.to_yaml(net_cfg, sort_keys=True),
    )


def net_name(cfg: DictConfig) -> str:
    """The chosen `net` option (conf/net/<name>.yaml), e.g. 'convnet'."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("net", "net")
    return cfg.net._target_.rsplit(".", 1)[-1].lower()


def eval_nets(cfg: DictConfig, data: Any, default_name: str | None = None) -> dict[str, Any]:
    """Architecture name -> factory; `eval.nets: null` evaluates with the run's own network."""
    if not cfg.eval.nets:
        return {default_name or net_name(cfg): net_factory(cfg.net, data)}
    return {name: net_factory(load_net_config(name), data) for name in cfg.eval.nets}


def synset_meta(cfg: DictConfig, data: Any, ipc: int) -> dict[str, Any]:
    return {
        "dataset": data.name,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "mean": list(data.mean),
        "std": list(data.std),
        "ipc": ipc,
        "method": cfg.matching.name,
        # IDM's partition-and-expansion: the evaluator expands the stored images the same way.
        "factor": int(cfg.matching.get("factor", 1)),
        "net": net_name(cfg),
        "seed": int(cfg.seed),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
    }


def build_loggers(cfg: DictConfig) -> list[Any]:
    loggers = [build(node, "logger") for node in (cfg.get("logger") or {}).values() if node]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def report_to_loggers(loggers: list[Any], metrics: dict[str, float], grid: Path) -> None:
    for logger in loggers:
        adopt_csv_columns(logger)
        logger.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        if hasattr(logger, "log_image"):  # W&B: the synthetic images on the dashboard
            logger.log_image("synset", [str(grid)])
        logger.finalize("success")
        if hasattr(logger, "log_image"):
            # Close the W&B run: the next job of a multirun in this process gets its own run.
            logger.experiment.finish()


def adopt_csv_columns(logger: Any) -> None:
    """Make a CSV logger append to the columns its file already has.

    Under DDP the distillation rows are written by the spawned rank 0, whose logger's column
    list this (main) process never saw; without it Lightning would rewrite the file with the
    evaluation columns only and fail on the old rows.
    """
    if type(logger).__name__ != "CSVLogger":
        return
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as file:
        header = next(csv.reader(file), [])
    known = logger.experiment.metrics_keys
    known.extend(key for key in header if key not in known)
    known.sort()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except UserError as err:
        fail(err)
    return metrics.get(cfg.get("optimized_metric"))


register_schemas()

if __name__ == "__main__":
    run_cli(main, "run")
