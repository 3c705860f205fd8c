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


# -- risk (conf/risk) ---------------------------------------------------------------------
@dataclass
class RiskSchema:
    _target_: str = "???"
    name: str = "???"


@dataclass
class CVaRSchema(RiskSchema):
    alpha: float = 0.5  # mean of the worst (1 - alpha) of the mass


@dataclass
class EntropicSchema(RiskSchema):
    beta: float = 1.0  # > 0, relative to the mean loss: small approaches the mean, large the max


@dataclass
class MaxGroupSchema(RiskSchema):
    smooth: bool = False  # online group-DRO weights instead of the hard max
    eta: float = 0.1  # step size of those weights, relative to the mean loss


@dataclass
class TwoLevelSchema(RiskSchema):
    alpha: float = 0.8  # inner CVaR level within each group
    lam: float = 1.0  # weight of the worst group on top of the mean over groups


# conf/risk/<option>.yaml names one of these in its defaults list.
RISK_SCHEMAS: dict[str, type] = {
    "mean_schema": RiskSchema,
    "cvar_schema": CVaRSchema,
    "entropic_schema": EntropicSchema,
    "max_group_schema": MaxGroupSchema,
    "two_level_schema": TwoLevelSchema,
}


# -- clustering (conf/clustering) -------------------------------------------------------------
@dataclass
class ClusteringNoneSchema:
    name: str = "none"


@dataclass
class ClusteringSchema:
    """Keys shared by every clusterer (see rdd.clustering.clusterer)."""

    _target_: str = "???"
    name: str = "???"
    every: int = 50  # re-cluster every `every` outer iterations, and at iteration 0
    pool_per_class: int | None = 256  # real images per class that are clustered; null: all
    features: str = "embedding"  # embedding | pixels | fixed_net
    feature_net: str | None = None  # torch file {"config", "state_dict"} for fixed_net
    seed: int = 0


@dataclass
class FaissKMeansSchema(ClusteringSchema):
    k: int = 5  # clusters per class
    niter: int = 20
    nredo: int = 1
    spherical: bool = False
    min_points_per_centroid: int = 1
    max_points_per_centroid: int | None = None  # null: FAISS never subsamples


@dataclass
class NearestSyntheticSchema(ClusteringSchema):
    pass


@dataclass
class KnownSubgroupsSchema:
    """clustering=known: the data.subgroup mask as the groups (nothing to fit or tune)."""

    _target_: str = "rdd.clustering.KnownSubgroups"
    name: str = "known"
    seed: int = 0


# conf/clustering/<option>.yaml names one of these in its defaults list.
CLUSTERING_SCHEMAS: dict[str, type] = {
    "none_schema": ClusteringNoneSchema,
    "faiss_kmeans_schema": FaissKMeansSchema,
    "nearest_synthetic_schema": NearestSyntheticSchema,
    "known_schema": KnownSubgroupsSchema,
}


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
