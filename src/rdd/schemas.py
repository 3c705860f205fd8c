"""Structured-config schemas for the algorithm groups, registered in Hydra's ConfigStore.

Each `conf/<group>/<option>.yaml` starts from one of these schemas (its defaults list names
`<kind>_schema`), so a misspelt key such as `matching.lr_imgg=1` fails when the config is
composed instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class MatchingSchema:
    _target_: str = "???"
    name: str = "???"
    # Outer iterations of distillation. Coresets do not optimise and ignore it; it lives here
    # so that a budget overlay can set it whatever the method.
    iterations: int = 0


@dataclass
class GradientSchema(MatchingSchema):
    init: str = "real"
    lr_img: float = 0.1
    momentum_img: float = 0.5
    lr_net: float = 0.01
    momentum_net: float = 0.5
    batch_real: int = 256
    batch_train: int = 256
    outer_loop: int | None = None
    inner_loop: int | None = None
    distance: str = "layerwise"
    bn_images_per_class: int = 16
    dsa: bool = False
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_mode: str = "single"


@dataclass
class CoresetSchema(MatchingSchema):
    features: str = "pixels"
    feature_train_steps: int = 300
    feature_lr: float = 0.01


@dataclass
class ClusteringNoneSchema:
    name: str = "none"


@dataclass
class RiskSchema:
    _target_: str = "???"
    name: str = "???"
    # Where the risk acts: "networks" (networks trained on real data) and/or "matching".
    on: list[str] = field(default_factory=lambda: ["networks", "matching"])


def register_schemas() -> None:
    """Store every schema under its group (idempotent)."""
    store = ConfigStore.instance()
    entries: list[tuple[str, str, Any]] = [
        ("matching", "gradient_schema", GradientSchema),
        ("matching", "coreset_schema", CoresetSchema),
        ("clustering", "none_schema", ClusteringNoneSchema),
        ("risk", "mean_schema", RiskSchema),
    ]
    for group, name, node in entries:
        store.store(group=group, name=name, node=node)


register_schemas()
