"""A resumed run keeps the clusterer's state: refits match the last fit's centroids, and
``features=style`` (and ``style_error``, with its probe) keeps its first scaling, so both must survive a checkpoint."""

from __future__ import annotations

import pytest
import torch

from tests.checkpoint.test_resume import Killed, distil


@pytest.mark.parametrize("features, dim", [("style", 7), ("style_error", 8)])
def test_a_resumed_style_clustered_run_equals_an_uninterrupted_one_bitwise(
    tmp_path, features: str, dim: int
) -> None:
    overrides = [
        "matching=dm",
        "matching.iterations=4",
        "risk=cvar",
        f"clustering.features={features}",
        "clustering.k=2",  # two subgroups owning the ipc=2 images of a class
        "clustering.every=2",  # refits at 0 and 2: the second after the resume
    ]
    whole = distil(overrides, tmp_path / "whole")
    with pytest.raises(Killed):
        distil(overrides, tmp_path / "killed", kill_after=1)
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    # The refit at iteration 2 needs these (tests/checkpoint/test_resume.py's DSA case fails without).
    assert state["clusterer"]["feature_scale"].shape == (dim,)
    assert state["clusterer"]["centroids"].shape[-1] == dim
    if features == "style_error":  # the probe, fitted once, is what the refit's loss column needs
        assert state["clusterer"]["probe_weight"].ndim == 2
    assert torch.equal(whole, distil(overrides, tmp_path / "killed", resume=True))
