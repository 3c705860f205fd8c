"""Subgroup discovery in the real data (see conf/clustering). `none`: one group per class."""

from rdd.clustering.discovery import rare_group_discovery
from rdd.clustering.features import (
    FEATURE_SPACES,
    STYLE_NAMES,
    embed_in_batches,
    load_feature_net,
    robust_scaling,
    style_statistics,
)
from rdd.clustering.kmeans import class_seed, faiss_kmeans, per_class_kmeans
from rdd.clustering.kmeans_clusterer import KMeansClusterer
from rdd.clustering.known import KnownSubgroups
from rdd.clustering.matching import match_clusters, renumber
from rdd.clustering.nearest import NearestSyntheticClusterer, nearest_synthetic

__all__ = [
    "FEATURE_SPACES",
    "KMeansClusterer",
    "KnownSubgroups",
    "NearestSyntheticClusterer",
    "STYLE_NAMES",
    "class_seed",
    "embed_in_batches",
    "faiss_kmeans",
    "load_feature_net",
    "match_clusters",
    "nearest_synthetic",
    "per_class_kmeans",
    "rare_group_discovery",
    "renumber",
    "robust_scaling",
    "style_statistics",
]
