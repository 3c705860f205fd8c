"""`python -m rdd.evaluate synset=PATH`: evaluate a saved synthetic set by the protocol.

An rdd set (a run directory or its synset.pt) brings its dataset, network and evaluation
protocol in its stored config, so the run's own evaluation is reproduced; ``eval.*`` keys (and
``eval=<option>``) given on the command line change it, ``data_root`` says where the dataset
lives now. A set made by another tool (VICO's DC/DSA/DM, MTT, IDM, or a plain
``{images, labels}`` file: :mod:`rdd.imports`) is evaluated on ``data=<option>`` with the
protocol of ``conf/eval``. ``baseline=random`` also trains the same networks on a random real
subset with the same images per class. Results go to this command's own run directory, never
into the run that made the set.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rdd.config.cli import fail_job, quiet_lightning, run_cli
from rdd.config.compose import CONF_DIR, build
from rdd.config.errors import Interrupted, UserError
from rdd.config.schemas import register_schemas
from rdd.data.sources import expand_root, resolve_layout
from rdd.eval.baseline import check_baseline, random_subset
from rdd.eval.protocol import (
    explicit_eval,
    explicit_note,
    imported_protocol,
    stored_protocol,
    task_overrides,
)
from rdd.eval.scoring import Evaluation, evaluate_synset
from rdd.eval.settings import (
    eval_nets,
    eval_settings,
    eval_trainer_kwargs,
    partition_of,
    with_learned_lr,
)
from rdd.eval.shifted_sets import shifted_test_sets
from rdd.imports import convert, read_foreign, resolve_format
from rdd.outputs.files import evaluation_config, prepare_output_dir, write_eval_outputs
from rdd.outputs.summary import format_summary
from rdd.parallel.strategy import apply_host_memory
from rdd.synset import SyntheticSet
from rdd.utils.io import atomic_write, write_json, write_text

log = logging.getLogger("rdd.evaluate")  # named so in evaluate.log under python -m too


@dataclass
class Prepared:
    """A set ready to evaluate: the data, what trains, the protocol and what to print."""

    data: Any
    images: torch.Tensor
    labels: torch.Tensor
    per_class: torch.Tensor  # stored images per class (K,)
    run_like: DictConfig  # eval, net (and matching/risk names) as rdd.run's config has them
    lr: float | None
    default_net: str | None
    description: str
    protocol: str  # where the protocol comes from, for the output
    config: DictConfig  # config.yaml: what rdd.report groups the evaluation by


def evaluate(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, float]:
    """Evaluate ``cfg.synset``; returns the metrics (also written to metrics.json).

    Args:
        cfg: the composed ``evaluate`` config.
        overrides: the command line's overrides; None: read from Hydra (see
            :func:`rdd.eval.protocol.task_overrides`).
    """
    quiet_lightning()
    if OmegaConf.is_missing(cfg, "synset") or not cfg.synset:
        raise UserError(
            "synset is not set: pass synset=<rdd run dir or synset.pt, or a file written by "
            "VICO (res_*.pt), MTT (images_best.pt) or IDM>"
        )
    baseline = check_baseline(cfg.baseline)
    apply_host_memory(cfg.trainer)
    fmt = resolve_format(cfg.synset, cfg.synset_format)
    overrides = task_overrides(cfg, overrides)
    prepared = prepare_rdd(cfg, overrides) if fmt == "rdd" else prepare_foreign(cfg, fmt, overrides)
    data, run_like = prepared.data, prepared.run_like
    out_dir = prepare_output_dir(cfg.paths.output_dir)
    base_settings = eval_settings(run_like, data)
    settings = with_learned_lr(base_settings, prepared.lr)
    nets = eval_nets(run_like, data, default_name=prepared.default_net)
    trainer_kwargs = eval_trainer_kwargs(cfg)
    config = OmegaConf.to_yaml(evaluation_config(prepared.config, cfg, fmt))
    start = time.perf_counter()

    def write_outputs(metrics: dict[str, Any], evaluation: Evaluation) -> None:
        # config.yaml beside the figures: what rdd.report groups them by (dataset, method, ...).
        write_text(out_dir / "config.yaml", config)
        write_eval_outputs(out_dir, metrics, evaluation, data, settings)

    def write_metrics(evaluation: Evaluation, complete: bool) -> None:
        # Rewritten as figures arrive: an interrupted evaluation keeps what it computed.
        seconds = {"eval_seconds": time.perf_counter() - start}
        done = {"eval_complete": complete and baseline != "random"}  # the baseline comes next
        write_outputs(dict(evaluation) | seconds | done, evaluation)

    try:
        evaluation = evaluate_synset(
            prepared.images,
            prepared.labels,
            data,
            nets,
            settings,
            trainer_kwargs,
            cfg.seed,
            test_groups=partition_of(data, settings),
            shifted=shifted_test_sets(data, settings),
            known_group=data.subgroup_test_set,
            on_update=write_metrics,
        )
    except Interrupted as err:  # Ctrl-C, SIGTERM, SIGUSR1: the exit status keeps the signal
        kept = (out_dir / "metrics.json").exists()
        where = f"the figures so far are in {out_dir / 'metrics.json'}" if kept else "nothing kept"
        raise err.again(f"evaluation stopped; {where}") from None
    metrics = dict(evaluation) | {"eval_seconds": time.perf_counter() - start}
    metrics["eval_complete"] = True
    if baseline == "random":
        # The same networks (seeds) and protocol; only the training images differ.
        x, y = random_subset(data.train_x, data.train_y, prepared.per_class, cfg.seed)
        rand = evaluate_synset(x, y, data, nets, settings, trainer_kwargs, cfg.seed)
        metrics |= {
            "random_test_acc": rand["test_acc"],
            "random_test_acc_std": rand["test_acc_std"],
            "gain_over_random": metrics["test_acc"] - rand["test_acc"],
        }
    write_outputs(metrics, evaluation)
    write_json(out_dir / "synset_source.json", {"synset": str(Path(cfg.synset).resolve())})
    summary = summary_text(cfg, prepared, settings, metrics, out_dir)
    atomic_write(out_dir / "summary.txt", lambda tmp: tmp.write_text(summary + "\n"))
    log.info(summary)  # through logging: Hydra's job logging copies it into evaluate.log
    return metrics


def summary_text(
    cfg: DictConfig, prepared: Prepared, settings: DictConfig, metrics: dict, out_dir: Path
) -> str:
    """rdd.run's summary table, with the set's source, validation and gain over random."""
    run_like = OmegaConf.merge(
        prepared.run_like, {"eval": settings, "seed": cfg.seed}
    )  # the table shows the protocol actually used
    lines = [format_summary(run_like, prepared.data, metrics, out_dir)]
    lines[:0] = [f"set: {prepared.description}", f"protocol: {prepared.protocol}"]
    lines.append(
        f"{run_like.matching.name} ipc {run_like.ipc} on {prepared.data.name}: test acc "
        f"{metrics['test_acc']:.2f} ± {metrics['test_acc_std']:.2f} %, {val_line(metrics)}"
    )
    if "gain_over_random" in metrics:
        lines.append(
            f"random real subset (same images per class, same networks): test acc "
            f"{metrics['random_test_acc']:.2f} ± {metrics['random_test_acc_std']:.2f} %, "
            f"gain over random {metrics['gain_over_random']:+.2f} points"
        )
    return "\n".join(lines)


def val_line(metrics: dict[str, float]) -> str:
    if "val_acc" not in metrics:
        return "no validation split (data.val_fraction=0)"
    return f"val acc {metrics['val_acc']:.2f} ± {metrics['val_acc_std']:.2f} %"


def prepare_rdd(cfg: DictConfig, overrides: list[str]) -> Prepared:
    """An rdd set: its stored dataset, network and protocol (with the explicit eval keys)."""
    synset = SyntheticSet.load(cfg.synset)
    stored = OmegaConf.create(synset.meta["config"])
    data_cfg = stored.data.copy()
    if cfg.get("data") is not None:
        if cfg.data.name != data_cfg.name:
            raise UserError(
                f"the dataset of an rdd set comes from the set ({data_cfg.name}), not from "
                f"data={cfg.data.name}: drop data=; use data_root=<dir> if its files moved"
            )
        if any(o.split("=", 1)[0].lstrip("+~") == "data.root" for o in overrides):
            data_cfg.root = cfg.data.root
    data_cfg.root = checked_root(data_cfg, cfg.data_root)
    if synset.zca is not None:
        # The real data gets the set's own whitening, not a refit (which could differ).
        data_cfg.zca = False
    data = build(data_cfg, "data")
    data.setup()
    check_match(data, synset, data_cfg.root)
    if synset.zca is not None:
        data.apply_zca(synset.zca)
    explicit = explicit_eval(cfg.eval, overrides)
    protocol = stored_protocol(cfg.eval, stored.get("eval"), explicit)
    run_like = OmegaConf.create(
        {
            "eval": OmegaConf.to_container(protocol),
            "net": stored.net,
            "matching": {"name": synset.meta["method"]},
            "risk": {"name": OmegaConf.select(stored, "risk.name", default="none")},
            "ipc": synset.ipc,
        }
    )
    images, labels = synset.expanded()
    per_class = torch.bincount(synset.labels, minlength=data.num_classes)
    stored.data.root = data_cfg.root  # where its dataset was read this time
    stored.eval = protocol
    return Prepared(
        data, images, labels, per_class, run_like, synset.meta.get("lr"), synset.meta.get("net"),
        f"rdd set {resolve_name(cfg.synset)}",
        protocol=f"the run's own, stored with the set{explicit_note(explicit)}",
        config=stored,
    )  # fmt: skip


def prepare_foreign(cfg: DictConfig, fmt: str, overrides: list[str]) -> Prepared:
    """A set from another tool on ``data=<option>``, scored as rdd.run scores its own sets on
    that dataset (:func:`rdd.eval.protocol.imported_protocol`)."""
    raw = read_foreign(cfg.synset, fmt, int(cfg.exp))
    if cfg.get("data") is None:
        hint = f" (its name suggests data={raw.dataset})" if raw.dataset else ""
        raise UserError(
            f"a {fmt} set does not record its dataset{hint}: pass data=<option> (e.g. "
            "data=cifar10 data.root=<dir>)"
        )
    data_cfg = cfg.data.copy()
    data_cfg.root = checked_root(data_cfg, cfg.data_root)
    data = build(data_cfg, "data")
    data.setup()
    factor = cfg.factor
    if factor is None:
        if fmt == "idm":
            raise UserError(
                "IDM files do not record whether the set was made with --aug (each image holds "
                "2x2 tiles): pass factor=2 (IDM's published commands) or factor=1"
            )
        factor = 1
    imported = convert(raw, data, cfg.normalization, cfg.soft_labels, int(factor))
    per_class = imported.per_class
    ipc = int(per_class.max()) if int(per_class.min()) == int(per_class.max()) else "mixed"
    protocol, source = imported_protocol(cfg.eval, overrides, raw.method)
    run_like = OmegaConf.create(
        {
            "eval": OmegaConf.to_container(protocol, resolve=True),
            "net": cfg.net,
            "matching": {"name": raw.method},
            "risk": {"name": "none"},
            "ipc": ipc,
        }
    )
    imported_as = {"format": fmt, "factor": int(factor), "soft_labels": cfg.soft_labels}
    imported_as["normalization"] = cfg.normalization  # a name, or mean/std
    config = OmegaConf.merge(
        run_like,
        # An experiment of a res_*.pt is a distillation of its own: the report counts it as a seed.
        {"data": OmegaConf.to_container(data_cfg, resolve=True), "seed": int(cfg.exp)},
        {"imported": imported_as},
    )
    return Prepared(
        data, imported.images, imported.labels, per_class, run_like, imported.lr, None,
        f"{resolve_name(cfg.synset)}: {imported.description}", protocol=source, config=config,
    )  # fmt: skip


def resolve_name(path: str) -> str:
    return str(Path(path).expanduser())


def checked_root(data_cfg: DictConfig, data_root: str | None) -> Any:
    """``data_root`` if given (refused for a dataset that reads no files), else the config's."""
    if not data_root:
        return data_cfg.get("root")
    if resolve_layout(data_cfg.name, expand_root(data_root), data_cfg.get("layout", "auto")) == (
        "bundled"
    ):
        raise UserError(
            f"data_root={data_root} cannot be used: {data_cfg.name} is bundled with "
            "scikit-learn and reads no files; drop data_root"
        )
    return data_root


def check_match(data: Any, synset: SyntheticSet, root: Any) -> None:
    """The real data is the set's dataset: classes, channels, image size (and class names)."""
    names = synset.meta.get("class_names")
    if (
        data.num_classes != synset.meta["num_classes"]
        or (data.channel, *data.im_size) != tuple(synset.images.shape[1:])
        or (names is not None and list(names) != list(data.class_names))
    ):
        raise UserError(
            f"the dataset at '{root}' does not match the synthetic set ({data.num_classes} "
            f"classes, {data.channel}x{'x'.join(map(str, data.im_size))} images, not "
            f"{synset.meta['num_classes']} classes of "
            f"{'x'.join(map(str, synset.images.shape[1:]))}): point data_root at the dataset "
            "it was made from"
        )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    try:
        return evaluate(cfg).get("val_acc")
    except (UserError, Interrupted) as err:
        fail_job(err)


register_schemas()

if __name__ == "__main__":
    run_cli(main)
