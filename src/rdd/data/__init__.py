"""Real datasets held in memory as uint8 tensors, decoded once and cached on disk.

Public API:
    load_dataset: cached loading of a whole dataset as :class:`ImageData`.
    load_source: the same without the cache.
    RealDataModule: LightningDataModule with normalised train/val/test tensors
        (instantiated from ``conf/data/*.yaml``).
"""

from rdd.data.cache import load_dataset
from rdd.data.datamodule import RealDataModule, stratified_split
from rdd.data.sources import SOURCES, ImageData, load_source

__all__ = [
    "SOURCES",
    "ImageData",
    "RealDataModule",
    "load_dataset",
    "load_source",
    "stratified_split",
]
