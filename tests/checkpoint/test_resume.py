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
from omegaconf import OmegaConf

from rdd.checkpoint.state import Checkpoints, load_checkpoint, run_identity
from rdd.config.errors import UserError
from rdd.eval.settings import eval_settings, partition_of
from rdd.run import distill
from rdd.synset import SyntheticSet
from rdd.utils.io import tensor_digest
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
    # Resumed in its own directory: no CONTINUED.txt there, it stays resumable.
    assert not (tmp_path / "killed" / "CONTINUED.txt").exists()


def test_a_resumed_run_with_kept_represented_rows_equals_an_uninterrupted_one(tmp_path) -> None:
    """robust.allocation.represent_step=0 (the represented rows keep their group's real
    start): the rows are in the checkpoint and a resumed run is bitwise the whole one."""
    overrides = ["ipc=10", "matching=dm", "matching.iterations=4", "risk=cvar"]
    overrides += ["robust.allocation.represent_step=0"]
    whole = distil(overrides, tmp_path / "whole")
    with pytest.raises(Killed):
        distil(overrides, tmp_path / "killed", kill_after=1)
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    represented = state["ownership"]["represented"]
    assert bool(represented.any())  # digits' defaults give a rare group's start back
    resumed = distil(overrides, tmp_path / "killed", resume=True)
    assert torch.equal(whole, resumed)


def test_resume_refuses_a_missing_foreign_or_mismatched_checkpoint(tmp_path) -> None:
    cfg = compose_config(*TINY, "matching=dc", output_dir=tmp_path)
    with pytest.raises(UserError, match="is not a run directory of python -m rdd.run"):
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


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as rows:
        return list(csv.DictReader(rows))


def test_sigkill_mid_distillation_then_resume_equals_an_uninterrupted_run(tmp_path, cli) -> None:
    """A real `python -m rdd.run` under the default checkpoint cadence (checkpoint_every=50
    and 6 iterations: a checkpoint after every iteration) killed with SIGKILL after its
    second checkpoint, then continued: the same set, a CSV holding every iteration, and the
    killed run can then not be continued a second time."""
    args = [*TINY, "matching=dc", "matching.iterations=6", "eval.corruptions=[]"]
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
    killed = tmp_path / "killed"
    victim = start(*args, "logger=csv", f"hydra.run.dir={killed}")
    checkpoint = killed / "checkpoint.pt"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = (
            torch.load(checkpoint, weights_only=True)["next_iteration"]
            if checkpoint.exists()
            else 0
        )
        # Killed once the CSV, too, holds every iteration the checkpoint has done.
        if done >= 2 and len(csv_rows(killed)) == done:
            break
        assert victim.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "synset.pt").exists()
    resumed_at = torch.load(checkpoint, weights_only=True)["next_iteration"]
    killed_rows = csv_rows(killed)
    # resume=<dir> alone: the killed run's overrides come from its .hydra/overrides.yaml.
    resumed = tmp_path / "resumed"
    out, err = finish(start(f"resume={killed}", f"hydra.run.dir={resumed}"))
    assert f"resumed at iteration {resumed_at} of 6" in out
    # The bar and the logged rows count the run's iterations, not the resumed fit's batches.
    counts = [int(n) for n in re.findall(r"distilling:.*?\| (\d+)/6", out)]  # on stdout
    assert counts and min(counts) >= resumed_at and max(counts) == 6, out[-1500:]
    assert "Epoch 0" not in out
    # The CSV is continued: the killed run's rows, then the iterations the resumed run did.
    rows = csv_rows(resumed)
    assert [int(row["iteration"]) for row in rows] == list(range(6)), rows
    assert rows[:resumed_at] == killed_rows[:resumed_at]
    whole = SyntheticSet.load(tmp_path / "whole" / "synset.pt").images
    assert torch.equal(whole, SyntheticSet.load(resumed / "synset.pt").images)

    # Continued once: refused a second time (a duplicate continuation), naming the continuation.
    before = sorted(p.name for p in killed.iterdir())
    again = cli("rdd.run", f"resume={killed}", f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert again.stderr.startswith(f"error: resume: the run in '{killed}' was already continued")
    assert f"by '{resumed}'" in again.stderr and "that run has finished" in again.stderr
    assert f"delete {killed / 'CONTINUED.txt'}" in again.stderr  # to branch one on purpose
    assert not (tmp_path / "again").exists() and sorted(p.name for p in killed.iterdir()) == before
    # The continuation finished: nothing to resume, and how to score its set instead.
    done = cli("rdd.run", f"resume={resumed}", f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert done.returncode == 2 and "has finished distilling" in done.stderr, done.stderr
    assert f"python -m rdd.evaluate synset={resumed}" in done.stderr
    assert not (tmp_path / "again").exists()


def hydra_run(run_dir: Path, *overrides: str) -> Path:
    """A run directory as Hydra starts it for `python -m rdd.run <overrides>` (.hydra/)."""
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = compose_config(*overrides, output_dir=run_dir)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    given = [*overrides, f"hydra.run.dir={run_dir}"]
    OmegaConf.save(OmegaConf.create(given), run_dir / ".hydra" / "overrides.yaml")
    return run_dir


def missing(tmp: Path) -> Path:
    return tmp / "no-such-run"


def not_a_run(tmp: Path) -> Path:
    (tmp / "notes").mkdir()
    (tmp / "notes" / "todo.txt").write_text("distil digits\n")
    return tmp / "notes"


def finished(tmp: Path) -> Path:
    run_dir = hydra_run(tmp / "finished", "ipc=2")
    (run_dir / "synset.pt").write_bytes(b"set")
    (run_dir / "metrics.json").write_text("{}\n")
    return run_dir


def before_first_checkpoint(tmp: Path) -> Path:
    return hydra_run(tmp / "early", "ipc=2", "matching=dm")


def without_checkpoints(tmp: Path) -> Path:
    return hydra_run(tmp / "off", "ipc=2", "checkpoint_every=0")


def continued(tmp: Path) -> Path:
    later = hydra_run(tmp / "later", "ipc=2")
    (later / "checkpoint.pt").write_bytes(b"state")
    run_dir = hydra_run(tmp / "killed", "ipc=2")
    (run_dir / "checkpoint.pt").write_bytes(b"state")
    (run_dir / "CONTINUED.txt").write_text(f"continued in {later}\n")
    return run_dir


# How each directory that cannot be continued is refused: what the line says, and its fix.
REFUSALS = [
    (missing, ["'{dir}' does not exist", "resume=auto"]),
    (not_a_run, ["'{dir}' is not a run directory of python -m rdd.run", "resume=auto"]),
    (finished, ["has finished distilling", "python -m rdd.evaluate synset={dir}"]),
    (
        before_first_checkpoint,
        [
            "it stopped before its first checkpoint",
            "start it again: python -m rdd.run ipc=2 matching=dm",
        ],
    ),
    (
        without_checkpoints,
        ["checkpoint_every=0 (no checkpoints)", "python -m rdd.run ipc=2 checkpoint_every=50"],
    ),
    (
        continued,
        ["already continued by '{tmp}/later'", "continue that run instead, resume={tmp}/later"],
    ),
]


@pytest.mark.parametrize("make, says", REFUSALS, ids=[r[0].__name__ for r in REFUSALS])
def test_resume_refuses_each_directory_it_cannot_continue_with_its_own_fix(
    make, says, tmp_path, cli
) -> None:
    """One `error: resume: ...` line naming the case and the fix, exit 2, before Hydra starts:
    no run directory is made and the given one is left as it was."""
    run_dir = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "new"
    result = cli("rdd.run", f"resume={run_dir}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = result.stderr
    assert line.startswith("error: resume: ") and line.count("\n") == 1, line
    for expected in says:
        assert expected.format(dir=run_dir, tmp=tmp_path) in line, line
    assert "Traceback" not in result.stdout + line and not out.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_run_killed_before_its_first_checkpoint_says_to_start_it_again(tmp_path, cli) -> None:
    """A real `python -m rdd.run` killed (SIGKILL) before it wrote any checkpoint."""
    run_dir = tmp_path / "killed"
    args = [*TINY, "matching=dc", "matching.iterations=6", f"hydra.run.dir={run_dir}"]
    victim = subprocess.Popen(
        [sys.executable, "-m", "rdd.run", *args],
        cwd=REPO,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / ".hydra" / "overrides.yaml").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "no run directory"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (run_dir / "checkpoint.pt").exists()
    result = cli("rdd.run", f"resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    again = " ".join(args[:-1])
    assert result.stderr.startswith(f"error: resume: the run in '{run_dir}' has no checkpoint.pt")
    assert f"start it again: python -m rdd.run {again}" in result.stderr
    assert not (tmp_path / "logs").exists()  # no run directory of its own


def test_the_checkpoint_cadence_makes_every_run_resumable() -> None:
    """checkpoint_every, but at most a tenth of the run's iterations apart; 0 stays off."""
    from rdd.checkpoint.state import checkpoint_cadence

    assert checkpoint_cadence(50, 6) == 1  # `make run`: DC on digits, 6 iterations
    assert checkpoint_cadence(50, 60) == 6
    assert checkpoint_cadence(50, 1000) == 50  # the published budgets: as configured
    assert checkpoint_cadence(5, 1000) == 5
    assert checkpoint_cadence(0, 6) == 0
