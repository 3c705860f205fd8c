"""A resumed run keeps the clusterer's state: refits match the last fit's centroids, and
``features=style`` keeps its first scaling, so both must survive a checkpoint."""

from __future__ import annotations

import pytest
import torch

from tests.checkpoint.test_resume import Killed, distil


def test_a_resumed_style_clustered_run_equals_an_uninterrupted_one_bitwise(tmp_path) -> None:
    overrides = [
        "matching=dm",
        "matching.iterations=4",
        "risk=cvar",
        "clustering.features=style",
        "clustering.k=2",  # two subgroups owning the ipc=2 images of a class
        "clustering.every=2",  # refits at 0 and 2: the second after the resume
    ]
    whole = distil(overrides, tmp_path / "whole")
    with pytest.raises(Killed):
        distil(overrides, tmp_path / "killed", kill_after=1)
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    # The refit at iteration 2 needs these (tests/checkpoint/test_resume.py's DSA case fails without).
    assert state["clusterer"]["feature_scale"].shape == (7,)
    assert state["clusterer"]["centroids"].shape[-1] == 7
    assert torch.equal(whole, distil(overrides, tmp_path / "killed", resume=True))
