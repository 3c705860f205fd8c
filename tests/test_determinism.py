"""Determinism on CPU: the same seed gives the bit-identical synthetic set, for every matching
method present, with and without a robust risk; another seed gives another set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rdd.run import Prepared, distill, prepare
from tests.conftest import MTT_EXPERTS as EXPERTS
from tests.conftest import TINY, compose_config

METHODS = ["dc", "dsa", "dm", "idm", "mtt", "random", "herding", "kcenter"]
# Small budgets per method on top of TINY (one outer iteration at ipc 2).
EXTRA = {
    "idm": ["matching.train_steps=1", "matching.fetch_nets=2", "matching.queue_size=2"],
    "mtt": ["matching.syn_steps=2", "matching.expert_epochs=1", "matching.max_start_epoch=1"]
    + EXPERTS,
    "herding": ["matching.features=random_net"],
    "kcenter": ["matching.features=random_net"],
}


def prepared(overrides: list[str], out: Path) -> Prepared:
    """What rdd.run distils from, seeding included."""
    return prepare(compose_config(*TINY, *overrides, output_dir=out))


def synthetic_set(overrides: list[str], tmp_path: Path) -> torch.Tensor:
    """Distil as rdd.run does, without the evaluation."""
    images, _, _ = distill(prepared(overrides, tmp_path))
    return images


@pytest.mark.parametrize("risk", ["none", "cvar"])
@pytest.mark.parametrize("method", METHODS)
def test_the_same_seed_gives_the_identical_set(method, risk, mtt_buffer, tmp_path) -> None:
    overrides = [f"matching={method}", f"risk={risk}", *EXTRA.get(method, [])]
    if risk != "none":
        overrides += ["clustering.k=2"]  # two subgroups owning the ipc=2 images of a class
    if method == "mtt":
        overrides += [f"experts.root={mtt_buffer}"]
        if risk != "none":  # robust experts are another buffer; the risk acts on matching here
            overrides += ["robust.targets=[matching]"]
    first = synthetic_set(overrides, tmp_path)
    again = synthetic_set(overrides, tmp_path)
    assert torch.equal(first, again)
    other = synthetic_set([*overrides, "seed=1"], tmp_path)
    assert not torch.equal(first, other)


def test_a_compiled_run_gives_the_identical_set_run_after_run(tmp_path) -> None:
    # matching.compile_nets=true (auto keeps digits eager): torch.compile's kernels sum in
    # their own order, but the same order every time.
    overrides = ["matching=dm", "matching.iterations=3", "matching.compile_nets=true"]
    first = synthetic_set(overrides, tmp_path / "a")
    assert torch.equal(first, synthetic_set(overrides, tmp_path / "b"))
    assert not torch.equal(first, synthetic_set([*overrides, "seed=1"], tmp_path / "c"))
