"""Checkpoints and resume: a run killed mid-distillation and resumed gives the set of an
uninterrupted run with the same seed, bit for bit on CPU (every random draw comes from a
generator whose state the checkpoint holds)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rdd.checkpoint import Checkpoints, load_checkpoint, run_identity
from rdd.errors import UserError
from rdd.eval.settings import eval_settings, partition_of
from rdd.io import tensor_digest
from rdd.run import distill
from rdd.synset import SyntheticSet
from tests.conftest import MTT_EXPERTS, REPO, TINY, compose_config
from tests.test_determinism import EXTRA, prepared


class Killed(Exception):
    """Stands for the process dying after an iteration."""


def distil(overrides: list[str], out: Path, kill_after: int | None = None, resume: bool = False):
    """Distil like rdd.run (checkpointing every iteration into ``out``); optionally die after
    iteration ``kill_after`` or continue from ``out``'s checkpoint."""
    ready = prepared([*overrides, "checkpoint_every=1"], out)
    cfg, data, matcher = ready.cfg, ready.data, ready.matcher
    groups = partition_of(data, eval_settings(cfg, data))  # as rdd.run records it
    meta = {"config": run_identity(cfg), "test_partition": tensor_digest(groups)}
    state = load_checkpoint(str(out), cfg, groups) if resume else None
    if kill_after is not None:
        step = matcher.step

        def dying_step(ctx):
            if ctx.iteration > kill_after:
                raise Killed
            return step(ctx)

        matcher.step = dying_step
    checkpoints = Checkpoints(out / "checkpoint.pt", 1, meta, state)
    return distill(ready, checkpoints=checkpoints)[0]


CASES = [
    ["matching=dc", "matching.iterations=3"],
    ["matching=dsa", "matching.iterations=3", "risk=cvar", "clustering.k=2", "clustering.every=2"],
    [
        "matching=dm",
        "matching.iterations=4",
        "risk=max_group",
        "risk.smooth=true",
        "clustering.k=2",
    ],
    ["matching=idm", "matching.iterations=3", *EXTRA["idm"], "matching.generate_every=1"],
    ["matching=mtt", "matching.iterations=3", *EXTRA["mtt"]],
]


@pytest.mark.parametrize("overrides", CASES, ids=[c[0][9:] for c in CASES])
def test_a_resumed_run_equals_an_uninterrupted_one_bitwise(
    overrides,
    mtt_buffer,
    tmp_path,
) -> None:
    if "matching=mtt" in overrides:  # the fixture's buffer, with its expert settings
        overrides = [*overrides, *MTT_EXPERTS, f"experts.root={mtt_buffer}"]
    whole = distil(overrides, tmp_path / "whole")
    with pytest.raises(Killed):
        distil(overrides, tmp_path / "killed", kill_after=1)
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert state["next_iteration"] == 2
    resumed = distil(overrides, tmp_path / "killed", resume=True)
    assert torch.equal(whole, resumed)
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()  # removed at the end


def test_resume_refuses_a_missing_foreign_or_mismatched_checkpoint(tmp_path) -> None:
    cfg = compose_config(*TINY, "matching=dc", output_dir=tmp_path)
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(str(tmp_path), cfg, None)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="not an rdd checkpoint"):
        load_checkpoint(str(tmp_path), cfg, None)
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(UserError, match="damaged or not an rdd checkpoint"):
        load_checkpoint(str(tmp_path), cfg, None)
    with pytest.raises(Killed):
        distil(["matching=dc", "matching.iterations=3"], tmp_path / "run", kill_after=0)
    other = compose_config(
        *TINY, "matching=dc", "matching.iterations=3", "seed=4", output_dir=tmp_path
    )
    with pytest.raises(UserError, match=r"another config \(differs in seed\)"):
        load_checkpoint(str(tmp_path / "run"), other, None)


def test_sigkill_mid_distillation_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    """A real `python -m rdd.run` killed with SIGKILL after its second checkpoint."""
    args = [
        *TINY,
        "matching=dc",
        "matching.iterations=6",
        "checkpoint_every=1",
        "eval.corruptions=[]",
    ]
    env = os.environ | {"PYTHONWARNINGS": "ignore"}

    def start(*argv: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "rdd.run", *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(proc: subprocess.Popen) -> tuple[str, str]:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
        return out, err

    finish(start(*args, f"hydra.run.dir={tmp_path / 'whole'}"))
    victim = start(*args, "logger=csv", f"hydra.run.dir={tmp_path / 'killed'}")
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["next_iteration"] >= 2:
            break
        assert victim.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "synset.pt").exists()
    resumed_at = torch.load(checkpoint, weights_only=True)["next_iteration"]
    # resume=<dir> alone: the killed run's overrides come from its .hydra/overrides.yaml.
    out, err = finish(
        start(f"resume={tmp_path / 'killed'}", f"hydra.run.dir={tmp_path / 'resumed'}")
    )
    assert f"resumed at iteration {resumed_at} of 6" in out
    # The bar and the logged rows count the run's iterations, not the resumed fit's batches.
    counts = [int(n) for n in re.findall(r"distilling:.*?\| (\d+)/6", out)]  # on stdout
    assert counts and min(counts) >= resumed_at and max(counts) == 6, out[-1500:]
    assert "Epoch 0" not in out
    with open(tmp_path / "resumed" / "csv" / "metrics.csv") as rows:
        steps = [int(row["iteration"]) for row in csv.DictReader(rows)]
    assert min(steps) == resumed_at and max(steps) == 5, steps
    whole = SyntheticSet.load(tmp_path / "whole" / "synset.pt").images
    resumed = SyntheticSet.load(tmp_path / "resumed" / "synset.pt").images
    assert torch.equal(whole, resumed)
