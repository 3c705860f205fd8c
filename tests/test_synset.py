"""The synthetic-set file: round trip, image grid, and refusal of corrupt or foreign files."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image

from rdd.errors import UserError
from rdd.synset import SyntheticSet, class_grouped_labels


def make_set(num_classes: int = 3, ipc: int = 2) -> SyntheticSet:
    images = torch.randn(num_classes * ipc, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    meta = {
        "dataset": "fake",
        "num_classes": num_classes,
        "class_names": [f"c{i}" for i in range(num_classes)],
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        "ipc": ipc,
        "method": "dc",
        "config": "ipc: 2\n",
    }
    return SyntheticSet(images, class_grouped_labels(num_classes, ipc), meta)


def test_round_trip(tmp_path) -> None:
    original = make_set()
    original.save(tmp_path / "synset.pt")
    loaded = SyntheticSet.load(tmp_path)  # a run directory works too
    assert torch.equal(loaded.images, original.images)
    assert torch.equal(loaded.labels, original.labels)
    assert loaded.meta == original.meta | {"zca": False} and loaded.zca is None


def test_grid_has_one_row_per_class(tmp_path) -> None:
    synset = make_set(num_classes=3, ipc=2)
    synset.save_grid(tmp_path / "grid.png")
    width, height = Image.open(tmp_path / "grid.png").size
    # make_grid: ipc columns, one row per class, 1-pixel padding around every 8x8 tile.
    assert (width, height) == (2 * 9 + 1, 3 * 9 + 1)


def test_denormalisation_inverts_the_normalisation() -> None:
    synset = make_set()
    pixels = torch.rand(6, 3, 8, 8)
    mean, std = (
        torch.tensor(synset.meta["mean"]).view(1, 3, 1, 1),
        torch.tensor(synset.meta["std"]).view(1, 3, 1, 1),
    )
    synset.images = (pixels - mean) / std
    assert torch.allclose(synset.denormalized(), pixels, atol=1e-6)


def test_labels_are_grouped_by_class() -> None:
    assert class_grouped_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]


def test_missing_file(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        SyntheticSet.load(tmp_path / "nothing.pt")


def test_corrupt_file(tmp_path) -> None:
    path = tmp_path / "synset.pt"
    make_set().save(path)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(UserError, match="corrupt"):
        SyntheticSet.load(path)


def test_foreign_torch_file(tmp_path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="not an rdd synthetic set"):
        SyntheticSet.load(tmp_path / "model.pt")


def test_damaged_payload(tmp_path) -> None:
    torch.save(
        {
            "format": "rdd-synset/1",
            "images": torch.zeros(2, 3),
            "labels": torch.zeros(5),
            "meta": {},
        },
        tmp_path / "bad.pt",
    )
    with pytest.raises(UserError, match="damaged"):
        SyntheticSet.load(tmp_path / "bad.pt")


class Payload:
    """Unpickling this would create a file: the loader must refuse before that."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_is_not_executed(tmp_path) -> None:
    marker = tmp_path / "executed"
    torch.save(
        {"format": "rdd-synset/1", "images": Payload(str(marker))},
        tmp_path / "evil.pt",
        pickle_module=pickle,
    )
    with pytest.raises(UserError):
        SyntheticSet.load(tmp_path / "evil.pt")
    assert not marker.exists()
