"""Config schemas of the `clustering` group (registered in Hydra's ConfigStore by rdd.schemas)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClusteringNoneSchema:
    name: str = "none"


# conf/clustering/<option>.yaml names one of these in its defaults list.
CLUSTERING_SCHEMAS: dict[str, type] = {"none_schema": ClusteringNoneSchema}
