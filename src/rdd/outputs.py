"""What a run writes into its directory: the set, its metadata and the evaluation files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rdd.config import check_fresh, check_writable
from rdd.eval.official_corruptions import corruption_source
from rdd.io import write_json
from rdd.nets import net_name
from rdd.synset import SyntheticSet


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
    write_json(out_dir / "metrics.json", metrics)
