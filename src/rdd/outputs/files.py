"""What a run writes into its directory: the set, its metadata and the evaluation files.

metrics.json holds every per-architecture figure once, as ``<net>/<figure>`` (with
``<net>/<figure>_std``, the std over that net's evaluation networks), ``headline_net`` (the
architecture whose figures are the run's headline ones) and the run-level figures
(``distill_seconds``, ``eval_seconds``). :func:`read_metrics` gives back the in-memory form
rdd.run returns, with the headline figures also unprefixed (``test_acc``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rdd.config.compose import check_fresh, check_writable
from rdd.config.errors import Interrupted, UserError
from rdd.eval.official_corruptions import corruption_source
from rdd.eval.scoring import Evaluation, evaluate_synset
from rdd.eval.settings import EvalProtocol
from rdd.nets import net_name
from rdd.synset import FILE_NAME, SyntheticSet
from rdd.utils.io import write_json


def prepare_output_dir(path: str | Path) -> Path:
    """The run directory; refuses one that already holds a finished run (nothing is
    overwritten), or that cannot be written or has no room left."""
    out_dir = Path(path)
    check_fresh(out_dir)
    check_writable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


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


def evaluation_config(config: DictConfig, cfg: DictConfig, fmt: str) -> DictConfig:
    """config.yaml of an rdd.evaluate: the run-like ``config`` rdd.report reads (dataset, method,
    ipc, risk, seed, protocol), with the command's (``cfg``) paths and where its set of format
    ``fmt`` came from."""
    source = {"synset": str(Path(cfg.synset).expanduser().resolve()), "format": fmt}
    source["eval_seed"] = int(cfg.seed)  # `seed` is the set's own (rdd.report counts them)
    return OmegaConf.merge(
        config,
        {"task_name": "evaluate", "source": source},
        {"paths": OmegaConf.to_container(cfg.paths, resolve=True)},
    )


def evaluate_into(
    out_dir: Path,
    train_set: tuple[torch.Tensor, torch.Tensor],
    data: Any,
    protocol: EvalProtocol,
    seed: int,
    distill_seconds: float,
    discovery: dict[str, float],
) -> dict[str, Any]:
    """Train the protocol's networks on the set and score them; returns the metrics.

    metrics.json and eval_details.json are rewritten as figures arrive, so an interrupted
    evaluation keeps what it computed (and says so, with the command to evaluate again)."""
    start, metrics = time.perf_counter(), {}

    def write_metrics(evaluation: Evaluation, complete: bool) -> None:
        seconds = {"distill_seconds": distill_seconds, "eval_seconds": time.perf_counter() - start}
        metrics.clear()
        metrics.update(dict(evaluation) | seconds | {"eval_complete": complete} | discovery)
        write_eval_outputs(out_dir, metrics, evaluation, data, protocol.settings)

    try:
        evaluate_synset(
            *train_set,
            data,
            protocol.nets,
            protocol.settings,
            protocol.trainer,
            seed,
            protocol.test_groups,
            protocol.shifted,
            known_group=data.subgroup_test_set,
            on_update=write_metrics,
        )
    except Interrupted as err:
        raise err.again(interrupted_evaluation(out_dir, bool(metrics))) from None
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
        "corruptions_source": corruption_source(settings),
    }
    write_json(out_dir / "eval_details.json", details)
    write_json(out_dir / "metrics.json", stored_metrics(metrics))


def headline_of(metrics: dict[str, float]) -> str | None:
    """The architecture whose ``<net>/<figure>`` equal the unprefixed figures (the first one
    evaluated, in the order the metrics list them); None without per-architecture figures."""
    archs = dict.fromkeys(key.split("/", 1)[0] for key in metrics if "/" in key)
    for arch in archs:
        prefix = f"{arch}/"
        mine = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
        if all(same(metrics.get(name), value) for name, value in mine.items()):
            return arch
    return None


def same(a: float | None, b: float) -> bool:
    return a == b or (a is not None and a != a and b != b)  # NaN figures are equal too


def stored_metrics(metrics: dict[str, float]) -> dict[str, float | str]:
    """metrics as metrics.json stores them: the headline aliases dropped, ``headline_net``
    naming their architecture."""
    headline = headline_of(metrics)
    if headline is None:
        return dict(metrics)
    aliases = {k.split("/", 1)[1] for k in metrics if k.startswith(f"{headline}/")}
    return {"headline_net": headline} | {k: v for k, v in metrics.items() if k not in aliases}


def read_metrics(path: str | Path) -> dict[str, float]:
    """A run's metrics.json (or the run directory holding it) as rdd.run returned them: every
    ``<net>/<figure>``, the headline net's figures also unprefixed, the run-level figures.
    Files written before ``headline_net`` (which hold the aliases already) read unchanged."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    try:
        stored = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read '{path}' ({err.strerror}): pass a finished run") from None
    except json.JSONDecodeError as err:
        raise UserError(f"'{path}' is not valid JSON ({err}): rerun or remove that run") from None
    if not isinstance(stored, dict):
        raise UserError(f"'{path}' is not an rdd metrics file: rerun or remove that run")
    headline = stored.pop("headline_net", None)
    # Figures are floats; eval_complete stays a bool (False: an interrupted evaluation).
    metrics = {
        k: v if isinstance(v, bool) else float(v)
        for k, v in stored.items()
        if isinstance(v, int | float)
    }
    if isinstance(headline, str):
        prefix = f"{headline}/"
        metrics |= {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
    return metrics


def interrupted_evaluation(out_dir: Path, scored: bool) -> str:
    """What an interrupted evaluation kept, and how to evaluate the set again."""
    kept = (
        f"the figures computed so far are in {out_dir / 'metrics.json'} (eval_complete: false)"
        if scored
        else "no network was scored yet"
    )
    return (
        f"evaluation stopped; {kept}; the set is in {out_dir / FILE_NAME}: evaluate it again "
        f"with python -m rdd.evaluate synset={out_dir}"
    )
