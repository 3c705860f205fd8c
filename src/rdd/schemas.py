"""Structured-config schemas for the algorithm groups, registered in Hydra's ConfigStore.

Each `conf/<group>/<option>.yaml` starts from one of these schemas (its defaults list names
`<kind>_schema`), so a misspelt key such as `matching.lr_imgg=1` fails when the config is
composed instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from rdd.clustering.schema import CLUSTERING_SCHEMAS
from rdd.risk.schema import RISK_SCHEMAS


@dataclass
class RobustSchema:
    """conf/robust: where the risk acts and what DC/DSA's networks train on (rdd.robust)."""

    targets: list[str] | None = None
    net_train_data: str = "synthetic"


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
    net_train_data: str = "synthetic"


@dataclass
class DistributionSchema(MatchingSchema):
    init: str = "real"
    lr_img: float = 1.0
    momentum_img: float = 0.5
    batch_real: int = 256
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_mode: str = "single"
    factor: int = 1
    ce_weight: float = 0.0
    step_per_class: bool = False
    queue_size: int = 0
    generate_every: int = 30
    push_nets: int = 1
    initial_nets: int = 3
    fetch_nets: int = 2
    train_steps: int = 10
    sampled_nets: int = 1
    batch_train: int = 256
    lr_net: float = 0.01
    momentum_net: float = 0.9
    weight_decay_net: float = 0.0005


@dataclass
class CoresetSchema(MatchingSchema):
    features: str = "pixels"
    feature_train_steps: int = 300
    feature_lr: float = 0.01


@dataclass
class TrajectorySchema(MatchingSchema):
    init: str = "real"
    lr_img: float = 100.0
    momentum_img: float = 0.5
    lr_lr: float = 1e-5
    momentum_lr: float = 0.5
    lr_teacher: float = 0.01
    lr_min: float = 1e-6
    lr_max: float | None = None
    syn_steps: int = 30
    expert_epochs: int = 2
    max_start_epoch: int = 20
    batch_syn: int | None = None
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    dsa_mode: str = "single"
    robust_weight: float = 1.0
    batch_real: int = 256


@dataclass
class PartitionSchema:
    k: int = 10
    seed: int = 0
    features: str = "pixels"
    net: str = "convnet"


@dataclass
class EvalSchema:
    """The evaluation protocol (conf/eval): typed, so `eval.epochs=ten` fails at compose time."""

    nets: list[str] | None = None
    num_nets: int = 5
    epochs: int = 1000
    lr: float = 0.01
    lr_from_synset: bool = True
    momentum: float = 0.9
    weight_decay: float = 0.0005
    batch_size: int = 256
    lr_decay_at: float = 0.5
    dsa: bool = True
    dsa_strategy: str | None = None
    partition: PartitionSchema = field(default_factory=PartitionSchema)
    shifts: list[str] = field(default_factory=list)
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=list)
    shift_seed: int = 0


def register_schemas() -> None:
    """Store every schema under its group (idempotent)."""
    store = ConfigStore.instance()
    entries: list[tuple[str, str, Any]] = [
        ("matching", "gradient_schema", GradientSchema),
        ("matching", "coreset_schema", CoresetSchema),
        ("matching", "distribution_schema", DistributionSchema),
        ("matching", "trajectory_schema", TrajectorySchema),
        ("eval", "eval_schema", EvalSchema),
        ("robust", "robust_schema", RobustSchema),
    ]
    entries += [("clustering", name, node) for name, node in CLUSTERING_SCHEMAS.items()]
    entries += [("risk", name, node) for name, node in RISK_SCHEMAS.items()]
    for group, name, node in entries:
        store.store(group=group, name=name, node=node)


register_schemas()
