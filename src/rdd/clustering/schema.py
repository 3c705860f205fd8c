"""Config schemas of the `clustering` group (registered in Hydra's ConfigStore by rdd.schemas)."""

from __future__ import annotations

from dataclasses import dataclass


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
