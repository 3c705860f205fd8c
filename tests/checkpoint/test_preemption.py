"""Preemption: SIGTERM/SIGUSR1 stop a distillation at its next safe point with a checkpoint,
exit 128 + the signal with one line saying how to continue, and the continued run (resume=<dir>
or resume=auto) gives the uninterrupted run's set bit for bit on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rdd.checkpoint import preemption
from rdd.checkpoint.state import Checkpoints, load_checkpoint, run_identity
from rdd.config.errors import Interrupted
from rdd.eval.settings import eval_settings, partition_of
from rdd.run import distill
from rdd.synset import SyntheticSet
from rdd.utils.io import tensor_digest
from tests.conftest import TINY, compose_config
from tests.test_determinism import prepared

# 3 iterations of 3 outer steps: two safe points inside every iteration.
DC = ["matching=dc", "matching.iterations=3", "matching.outer_loop=3", "matching.inner_loop=1"]
DSA_CVAR = [*DC[1:], "matching=dsa", "risk=cvar", "clustering.k=2", "clustering.every=2"]


def distil(overrides: list[str], out: Path, request=None, resume: bool = False) -> torch.Tensor:
    """Distil like rdd.run, without periodic checkpoints; ``request(matcher)`` wraps the
    matcher so that it notes a SIGTERM where the test wants it."""
    ready = prepared([*overrides, "checkpoint_every=0"], out)
    cfg, data = ready.cfg, ready.data
    groups = partition_of(data, eval_settings(cfg, data))
    meta = {"config": run_identity(cfg), "test_partition": tensor_digest(groups)}
    state = load_checkpoint(str(out), cfg, groups) if resume else None
    if request is not None:
        request(ready.matcher)
    return distill(ready, checkpoints=Checkpoints(out / "checkpoint.pt", 0, meta, state))[0]


def after_train_net(iteration: int, call: int):
    """SIGTERM noted after the ``call``-th inner training of ``iteration`` (mid-iteration)."""

    def wrap(matcher) -> None:
        train_net, calls = matcher.train_net, []

        def noting(net, opt, ctx, epochs):
            train_net(net, opt, ctx, epochs)
            calls.append(ctx.iteration)
            if calls.count(iteration) == call and ctx.iteration == iteration:
                preemption.note_request(signal.SIGTERM)

        matcher.train_net = noting

    return wrap


def after_last_image_step(iteration: int):
    """SIGTERM noted once ``iteration``'s last image step is taken (no safe point is left)."""

    def wrap(matcher) -> None:
        step = matcher.step

        def noting(ctx):
            stats = step(ctx)
            if ctx.iteration == iteration:
                preemption.note_request(signal.SIGTERM)
            return stats

        matcher.step = noting

    return wrap


@pytest.mark.parametrize(
    "overrides, noting, resumes_at",
    [
        (DC, after_train_net(1, 1), 1),  # mid-iteration: the state as of iteration 1's start
        (DC, after_last_image_step(1), 2),  # at the iteration's end: the state after it
        (DSA_CVAR, after_train_net(2, 2), 2),  # clustered pool, risk, DSA draws
    ],
    ids=["dc-mid-iteration", "dc-iteration-end", "dsa-cvar-mid-iteration"],
)
def test_a_preempted_run_resumes_to_the_uninterrupted_set_bitwise(
    overrides, noting, resumes_at, tmp_path
) -> None:
    whole = distil(overrides, tmp_path / "whole")
    with pytest.raises(Interrupted) as stop:
        distil(overrides, tmp_path / "stopped", request=noting)
    assert stop.value.signum == signal.SIGTERM and stop.value.exit_status == 143
    assert f"with {resumes_at} of 3 iterations done" in str(stop.value)
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert state["next_iteration"] == resumes_at and state["stopped_by"] == signal.SIGTERM
    resumed = distil(overrides, tmp_path / "stopped", resume=True)
    assert torch.equal(whole, resumed)


def test_without_a_request_nothing_changes(tmp_path) -> None:
    """The safe points cost no random draw: the run equals one without checkpoints."""
    with_checks = distil(DC, tmp_path / "a")
    ready = prepared([*DC, "checkpoint_every=0"], tmp_path / "b")
    assert torch.equal(with_checks, distill(ready)[0])


# -- a real python -m rdd.run, signalled ---------------------------------------------------------
ARGS = [*TINY, *DC[:1], "matching.iterations=4", "matching.batch_real=32", "checkpoint_every=1"]
ARGS += ["eval.corruptions=[]"]


def start(cwd: Path, *argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rdd.run", *argv],
        cwd=cwd,
        env=os.environ
        | {"PYTHONWARNINGS": "ignore", "RDD_LOG_DIR": str(cwd / "logs")}
        | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, status: int = 0) -> tuple[str, str]:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == status, err[-3000:]
    return out, err


def signal_after_first_checkpoint(
    proc: subprocess.Popen, run_dir: Path, signum: int
) -> tuple[float, str]:
    """Send ``signum`` once the run has a checkpoint; (seconds until it exited, stderr)."""
    deadline = time.monotonic() + 600
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    return time.monotonic() - sent, err


def test_sigterm_stops_with_a_checkpoint_and_resume_auto_continues_bitwise(tmp_path) -> None:
    logs = tmp_path / "logs"
    finish(start(tmp_path, *ARGS, f"hydra.run.dir={logs / 'whole'}"))
    stopped = logs / "stopped"
    seconds, err = signal_after_first_checkpoint(
        start(tmp_path, *ARGS, f"hydra.run.dir={stopped}"), stopped, signal.SIGTERM
    )
    last = err.strip().splitlines()[-1].split("\x1b[A")[-1]  # after the bars' clean-up
    assert last.startswith("stopped by SIGTERM: distillation stopped with "), err[-3000:]
    assert f"python -m rdd.run resume={stopped}" in last and "resume=auto" in last
    assert "Traceback" not in err
    assert seconds < 120, seconds  # one outer step, then the Trainer's teardown
    state = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert state["stopped_by"] == signal.SIGTERM
    assert (stopped / "FAILED.txt").exists() and not (stopped / "synset.pt").exists()
    # The same command with resume=auto finds the stopped run (the newest of this config).
    out, _ = finish(start(tmp_path, *ARGS, "resume=auto", f"hydra.run.dir={logs / 'resumed'}"))
    assert f"resume=auto: continuing {stopped}" in out + _
    assert f"resumed at iteration {state['next_iteration']} of 4" in out
    whole = SyntheticSet.load(logs / "whole" / "synset.pt").images
    assert torch.equal(whole, SyntheticSet.load(logs / "resumed" / "synset.pt").images)
    assert (stopped / "CONTINUED.txt").read_text().strip() == f"continued in {logs / 'resumed'}"


# -- resume=auto: which run it continues ---------------------------------------------------------
def fake_run(log_dir: Path, name: str, config: str, age: float) -> Path:
    """A run directory with a checkpoint made with ``config``, ``age`` seconds old."""
    run_dir = log_dir / "distill" / "runs" / name
    run_dir.mkdir(parents=True)
    torch.save(
        {"format": "rdd-checkpoint/2", "meta": {"config": config}}, run_dir / "checkpoint.pt"
    )
    stamp = time.time() - age
    os.utime(run_dir / "checkpoint.pt", (stamp, stamp))
    return run_dir


def auto_config(log_dir: Path, out: Path):
    return compose_config(*TINY, "resume=auto", f"paths.log_dir={log_dir}", output_dir=out)


def test_resume_auto_picks_the_newest_uncontinued_run_of_the_same_config(
    tmp_path, monkeypatch
) -> None:
    from rdd.checkpoint.resume import resume_source

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    logs, out = tmp_path / "logs", tmp_path / "logs" / "distill" / "runs" / "now"
    cfg = auto_config(logs, out)
    assert resume_source(cfg, out) is None  # nothing to continue: a fresh start
    same = run_identity(cfg)
    older = fake_run(logs, "older", same, age=300)
    newest = fake_run(logs, "newest", same, age=100)
    fake_run(logs, "other-config", same.replace("seed: 0", "seed: 1"), age=10)
    (logs / "distill" / "runs" / "broken").mkdir()
    (logs / "distill" / "runs" / "broken" / "checkpoint.pt").write_bytes(b"truncated")
    assert resume_source(cfg, out) == str(newest)
    (newest / "CONTINUED.txt").write_text("continued in elsewhere\n")
    assert resume_source(cfg, out) == str(older)
    explicit = compose_config(*TINY, f"resume={newest}", output_dir=out)
    assert resume_source(explicit, out) == str(newest)  # resume=<dir> is taken as given


def test_resume_auto_under_slurm_continues_only_its_jobs_runs(tmp_path, monkeypatch) -> None:
    """A requeued job (same $SLURM_JOB_ID) continues its own run, never another job's."""
    from rdd.checkpoint.resume import record_slurm_run, resume_source

    logs = tmp_path / "logs"
    cfg = auto_config(logs, logs / "x")
    same = run_identity(cfg)
    mine, theirs = fake_run(logs, "mine", same, age=200), fake_run(logs, "theirs", same, age=5)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    record_slurm_run(cfg, mine)
    assert (logs / "slurm" / "4242.txt").read_text() == f"{mine.resolve()}\n"
    assert resume_source(cfg, logs / "requeued") == str(mine.resolve())
    monkeypatch.setenv("SLURM_JOB_ID", "4243")  # another job of the same config
    assert resume_source(cfg, logs / "other") is None
    assert theirs.exists()


# -- trainer.deterministic ----------------------------------------------------------------------
def test_trainer_deterministic_switches_torch_to_deterministic_kernels(tmp_path) -> None:
    """Applied when the run is prepared (before any CUDA work); a tiny DC run still works."""
    from rdd.config.errors import UserError
    from rdd.parallel.strategy import apply_determinism

    saved = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        ready = prepared(["matching=dc", "trainer.deterministic=true"], tmp_path)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        images, _, _ = distill(ready)
        assert torch.isfinite(images).all()
        prepared(["matching=dc", "trainer.deterministic=warn"], tmp_path)
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        prepared(["matching=dc"], tmp_path)  # the default, false
        assert not torch.are_deterministic_algorithms_enabled()
        cfg = compose_config(*TINY, "trainer.deterministic=yes", output_dir=tmp_path)
        with pytest.raises(UserError, match="trainer.deterministic must be true, false or warn"):
            apply_determinism(cfg.trainer)
    finally:
        torch.use_deterministic_algorithms(False)
        if saved is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved
