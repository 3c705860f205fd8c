"""The synthetic-set file: round trip, image grid, and refusal of corrupt or foreign files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from rdd.config.errors import UserError
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


def test_grid_has_one_labelled_readable_row_per_class(tmp_path) -> None:
    synset = make_set(num_classes=3, ipc=2)
    synset.meta["class_names"] = ["cat", "dog", "zebra"]
    levels = [0.2, 0.5, 0.8]  # every image of class c is one grey level, after de-normalising
    mean, std = torch.tensor(synset.meta["mean"]), torch.tensor(synset.meta["std"])
    grey = torch.tensor(levels).repeat_interleave(2).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
    synset.images = (grey - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    synset.save_grid(tmp_path / "grid.png")
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("L")).astype(int)
    # 8x8 images enlarged (nearest neighbour) to 64x64: three rows of 64 pixels at least.
    assert pixels.shape[0] >= 3 * 64
    values = [round(v * 255) for v in levels]
    rightmost = pixels[:, -5]  # inside the last image of every row
    rows = [np.flatnonzero(np.abs(rightmost - v) <= 1) for v in values]
    assert all(len(r) == 64 and r[-1] - r[0] == 63 for r in rows)  # sharp 64-pixel rows
    assert rows[0][0] < rows[1][0] < rows[2][0]  # in class order
    first_image = np.flatnonzero(np.abs(pixels[rows[0][0]] - values[0]) <= 1)[0]
    assert first_image > 20  # room for the names on the left
    labels = [pixels[r[0] : r[-1] + 1, :first_image] for r in rows]
    assert all((label < 128).sum() > 10 for label in labels)  # each row has its name
    widths = [np.flatnonzero((label < 128).any(axis=0))[-1] for label in labels]
    assert widths[2] > widths[0]  # "zebra" is longer than "cat"


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
    with pytest.raises(UserError, match="is a damaged or truncated torch.save archive"):
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
