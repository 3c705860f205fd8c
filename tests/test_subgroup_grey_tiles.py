"""benchmarks/subgroup_shift/grey_tiles.py: the chroma measure and the pairing of its rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "grey_tiles.py"
spec = importlib.util.spec_from_file_location("subgroup_grey_tiles", SCRIPT)
grey_tiles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grey_tiles)


def test_chroma_is_zero_for_grey_images_and_the_channel_spread_otherwise() -> None:
    grey = torch.rand(2, 1, 4, 4).expand(-1, 3, -1, -1)
    assert bool((grey_tiles.chroma(grey) < 1e-6).all())  # 0 up to the mean's rounding
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 0.3  # channels (0.3, 0, 0): mean 0.1, deviations (0.2, -0.1, -0.1)
    expected = ((0.2**2 + 0.1**2 + 0.1**2) / 3) ** 0.5
    assert torch.allclose(grey_tiles.chroma(red), torch.tensor([expected]))


def test_pearson_against_numpy() -> None:
    import numpy as np

    xs, ys = [0.1, 0.4, 0.2, 0.9, 0.5], [1.0, 2.5, 0.5, 3.0, 2.0]
    assert abs(grey_tiles.pearson(xs, ys) - np.corrcoef(xs, ys)[0, 1]) < 1e-12


def test_an_arm_pairs_with_its_own_tags_none_then_the_named_one_then_the_untagged() -> None:
    def run(arm, tag, seed=0):
        return {"method": "dm", "arm": arm, "tag": tag, "seed": str(seed)}

    untagged, rng, own = run("none", ""), run("none", "_rng"), run("none", "_x")
    arm = run("discovered", "_x")
    assert grey_tiles.base_of([untagged, rng, own, arm], arm, {"_x": "_rng"}) is own
    assert grey_tiles.base_of([untagged, rng, arm], arm, {"_x": "_rng"}) is rng
    assert grey_tiles.base_of([untagged, rng, arm], arm, {"_x": "_g6,_rng"}) is rng
    assert grey_tiles.base_of([untagged, rng, arm], arm, {}) is untagged
    assert grey_tiles.base_of([run("none", "", seed=1), arm], arm, {}) is None
