"""Tests of rdd.data: sources, image folders, the cache, the datamodule and conf/data."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from rdd.config.compose import CONF_DIR
from rdd.config.errors import UserError
from rdd.data import RealDataModule, load_dataset, load_source, sources, stratified_split
from rdd.data import image_folder as imf
from tests.conftest import compose_config

CIFAR10 = list(sources.KNOWN_CLASSES["cifar10"])


def pixel(label: int, i: int) -> tuple[int, int, int]:
    """A distinct RGB colour per (class, image), to check labels and pixel values."""
    return 20 * label + i, 100 + i, 255 - 20 * label


def make_tree(
    root: Path, classes: list[str], n_train: int = 6, n_test: int = 2, size=(8, 8), ext="png"
) -> Path:
    """``root/{train,test}/<class>/<i>.<ext>``, solid colours from :func:`pixel`."""
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size[1], size[0]), pixel(label, i)).save(
                    folder / f"{i:04d}.{ext}"
                )
    return root


def test_digits_loads_with_fixed_split():
    a, b = load_source("digits", None), load_source("digits", "/ignored")
    assert len(a.train_x) + len(a.test_x) == 1797
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.uint8
    assert a.train_y.dtype == torch.int64 and a.classes == [str(c) for c in range(10)]
    assert int(a.train_x.max()) == 255
    assert torch.bincount(a.test_y).min() >= 35  # stratified: ~20% of each class
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, k), getattr(b, k))


def test_image_folder_labels_and_pixels(tmp_path):
    make_tree(tmp_path, ["a", "b", "c"])
    data = load_source("image_folder", tmp_path)
    assert data.classes == ["a", "b", "c"]
    assert data.train_x.shape == (18, 3, 8, 8) and data.test_x.shape == (6, 3, 8, 8)
    assert data.train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert data.train_x[7, :, 3, 3].tolist() == list(pixel(1, 1))
    assert data.test_x[5, :, 0, 0].tolist() == list(pixel(2, 1))
    sub = load_source("image_folder", tmp_path, classes=["c", "a"])
    assert sub.classes == ["c", "a"] and sub.train_x[0, :, 0, 0].tolist() == list(pixel(2, 0))


def test_image_folder_sizes(tmp_path):
    make_tree(tmp_path, ["a", "b"], size=(8, 8), ext="jpg")
    Image.new("RGB", (6, 10), (0, 0, 0)).save(tmp_path / "train" / "b" / "odd.JPG")
    with pytest.raises(UserError, match="data.image_size"):
        load_source("image_folder", tmp_path)
    data = load_source("image_folder", tmp_path, image_size=[4, 5])
    assert data.train_x.shape == (13, 3, 4, 5)


def test_process_pool_matches_serial(tmp_path, monkeypatch):
    make_tree(tmp_path, ["a", "b"], n_train=5)
    serial = load_source("image_folder", tmp_path)
    monkeypatch.setattr(imf, "_POOL_MIN_FILES", 1)
    monkeypatch.setattr(imf, "_CHUNK", 3)
    pooled = load_source("image_folder", tmp_path)
    assert torch.equal(serial.train_x, pooled.train_x)


def test_cache_hit_skips_decoding_and_corrupt_file_is_rebuilt(tmp_path, monkeypatch):
    root, cache = make_tree(tmp_path / "data", ["a", "b"]), tmp_path / "cache"
    first = load_dataset("image_folder", root, cache_dir=cache)
    (file,) = cache.glob("*.pt")
    decode = sources.load_source

    def fail(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "load_source", fail)
    again = load_dataset("image_folder", root, cache_dir=cache)
    assert again.classes == first.classes and torch.equal(again.train_x, first.train_x)
    monkeypatch.setattr(sources, "load_source", decode)
    file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = load_dataset("image_folder", root, cache_dir=cache)
    assert torch.equal(rebuilt.test_x, first.test_x)
    assert [p.name for p in cache.iterdir()] == [file.name]  # no temp files left behind


def test_changed_tree_rebuilds_cache(tmp_path):
    root, cache = make_tree(tmp_path / "data", ["a", "b"]), tmp_path / "cache"
    assert len(load_dataset("image_folder", root, cache_dir=cache).train_x) == 12
    Image.new("RGB", (8, 8)).save(root / "train" / "a" / "new.png")
    assert len(load_dataset("image_folder", root, cache_dir=cache).train_x) == 13
    assert len(list(cache.glob("*.pt"))) == 2


def test_known_dataset_read_as_image_folder(tmp_path):
    make_tree(tmp_path / "c10", list(reversed(CIFAR10)), n_train=1, n_test=1)
    data = load_dataset("cifar10", tmp_path / "c10")
    assert data.classes == CIFAR10 and data.train_x.shape == (10, 3, 8, 8)
    # Folder names that match the standard classes up to punctuation keep the standard order.
    names = [n.replace("/", "_") for n in sources.KNOWN_CLASSES["fashion_mnist"]]
    make_tree(tmp_path / "fm", sorted(names), n_train=1, n_test=1)
    fm = load_dataset("fashion_mnist", tmp_path / "fm")
    assert fm.classes == names and fm.train_x.shape[1] == 1  # grayscale


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": "nope", "root": "."}, "unknown dataset 'nope'"),
        ({"name": "cifar10", "root": "MISSING"}, "does not exist.*data.download=true"),
        ({"name": "image_folder", "root": "MISSING"}, "does not exist"),
        ({"name": "cifar10", "root": "EMPTY"}, "cifar-10-batches-py.*data.download=true"),
        ({"name": "image_folder", "root": "EMPTY"}, "expected .*train/<class>"),
        ({"name": "image_folder", "root": "TREE", "classes": ["a", "zz"]}, "'zz' is missing"),
        ({"name": "image_folder", "root": "TREE", "layout": "xx"}, "data.layout"),
        ({"name": "image_folder", "root": "TREE", "image_size": [1, 2, 3]}, "data.image_size"),
    ],
)
def test_load_errors(tmp_path, kwargs, words):
    (tmp_path / "EMPTY").mkdir()
    make_tree(tmp_path / "TREE", ["a", "b"], n_train=1, n_test=1)
    kwargs["root"] = tmp_path / kwargs["root"]
    with pytest.raises(UserError, match=words):
        load_dataset(**kwargs, cache_dir=tmp_path / "cache")


def test_empty_class_and_corrupt_image(tmp_path):
    make_tree(tmp_path, ["a", "b"], n_train=1, n_test=1)
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(UserError, match=r"'.*train/c' holds no images"):
        load_source("image_folder", tmp_path)
    os.rmdir(tmp_path / "train" / "c")
    (tmp_path / "test" / "b" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"cannot read image '.*bad\.png'"):
        load_source("image_folder", tmp_path)


def tiny_module(root: Path, **kwargs) -> RealDataModule:
    args = {"name": "image_folder", "root": str(root), "mean": [0.5] * 3, "std": [0.25] * 3}
    return RealDataModule(**(args | kwargs))


def test_datamodule_split_and_normalisation(tmp_path):
    make_tree(tmp_path, ["a", "b", "c"], n_train=10)
    dm = tiny_module(tmp_path, val_fraction=0.2, split_seed=3, batch_size=4)
    dm.setup()
    dm.setup()  # idempotent
    assert (dm.channel, dm.im_size, dm.num_classes) == (3, (8, 8), 3)
    assert torch.bincount(dm.val_y).tolist() == [2, 2, 2]
    assert len(dm.train_x) == 24 and dm.train_x.dtype == torch.float32
    # Pixel values tell the images apart: train and val share none and cover all of train.
    ids = lambda x: set(map(tuple, x[:, :, 0, 0].tolist()))  # noqa: E731
    assert not ids(dm.train_x) & ids(dm.val_x) and len(ids(dm.train_x) | ids(dm.val_x)) == 30
    other = tiny_module(tmp_path, val_fraction=0.2, split_seed=3)
    other.setup()
    assert torch.equal(other.val_x, dm.val_x)
    raw = load_source("image_folder", tmp_path).test_x
    assert torch.allclose(dm.denormalize(dm.test_x), raw.float() / 255, atol=1e-6)
    assert torch.allclose(dm.normalize(raw.float() / 255), dm.test_x)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and y.dtype == torch.int64
    assert torch.equal(torch.cat([b[1] for b in dm.test_dataloader()]), dm.test_y)


def test_stratified_split_edge_cases():
    y = torch.tensor([0, 1, 1, 1])
    train, val = stratified_split(y, 2, 0.1, seed=0)
    assert train.tolist() != [] and y[val].tolist() == [1]  # singleton class stays in train
    assert stratified_split(y, 2, 0.0, seed=0)[1].numel() == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"val_fraction": 0.6}, "val_fraction"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"mean": [0.5], "std": [0.5, 0.5]}, "data.mean"),
    ],
)
def test_datamodule_argument_errors(tmp_path, kwargs, words):
    with pytest.raises(UserError, match=words):
        tiny_module(tmp_path, **kwargs)


def test_datamodule_channel_mismatch(tmp_path):
    make_tree(tmp_path, ["a", "b"], n_train=2, n_test=1)
    with pytest.raises(UserError, match="3 channels"):
        tiny_module(tmp_path, mean=[0.5], std=[0.5]).setup()


@pytest.mark.parametrize("path", sorted((CONF_DIR / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_conf_data_instantiates(path, tmp_path):
    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config(f"data={path.stem}", *paths)
    if OmegaConf.is_missing(cfg.data, "root"):
        cfg.data.root = str(tmp_path)
    cfg.data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    keys = set(cfg.data) - {"_target_"}
    assert keys == set(inspect.signature(RealDataModule.__init__).parameters) - {"self"}
    dm = instantiate(cfg.data)
    assert isinstance(dm, RealDataModule) and len(dm.mean) == len(dm.std)
    assert "flip" not in dm.dsa_strategy or "mnist" not in dm.name and dm.name != "svhn"
    if dm.name == "digits":
        dm.setup()
        x = dm.denormalize(dm.train_x)  # val is held out, so compare loosely
        assert dm.channel == 1 and np.isclose(x.mean().item(), dm.mean[0], atol=0.01)
