"""Ctrl-C and failures: one line that says what was kept, nothing that looks like a finished
run, and an evaluation's figures written as they arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import rdd.eval.scoring
from rdd.config.errors import Interrupted
from rdd.outputs.files import read_metrics
from tests.conftest import REPO, TINY


def test_an_interrupted_evaluation_keeps_the_clean_figures(tmp_path, cli, monkeypatch) -> None:
    """Interrupted (what Ctrl-C raises) while the shifted sets are scored: exit 130, one line
    naming metrics.json, which holds the clean figures marked incomplete."""

    def interrupt(*args, **kwargs):
        raise Interrupted()

    monkeypatch.setattr(rdd.eval.scoring, "accuracy_on", interrupt)
    out = tmp_path / "run"
    result = cli("rdd.run", *TINY, "matching=random", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "evaluation stopped" in lines[0], result.stderr
    assert f"rdd.evaluate synset={out}" in lines[0]
    metrics = read_metrics(out)
    assert metrics["eval_complete"] is False
    assert 0 <= metrics["test_acc"] <= 100 and "noise_acc" not in metrics
    assert (out / "synset.pt").exists()
    assert (out / "FAILED.txt").read_text().startswith("interrupted: evaluation stopped")


def test_a_finished_evaluation_is_marked_complete(tmp_path, cli) -> None:
    out = tmp_path / "run"
    result = cli("rdd.run", *TINY, "matching=random", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(out)
    assert metrics["eval_complete"] is True and "noise_acc" in metrics
    assert not (out / "FAILED.txt").exists()


def test_sigint_during_distillation_says_how_to_resume(tmp_path) -> None:
    """A real Ctrl-C (SIGINT) to `python -m rdd.run`: exit 130 with one line naming the
    checkpoint and the resume command, and the directory marked failed, not finished."""
    out = tmp_path / "run"
    args = [*TINY, "matching=dm", "matching.iterations=100000", "checkpoint_every=2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rdd.run", *args, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=os.environ | {"PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: distillation stopped"), err[-2000:]
    assert f"python -m rdd.run resume={out}" in last
    assert "Traceback" not in err
    assert (out / "checkpoint.pt").exists() and not (out / "synset.pt").exists()
    assert (out / "FAILED.txt").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["resume=R", "trainer=cpu"],
            ["ipc=3", "matching=dm", "+note=x", "resume=R", "trainer=cpu"],
        ),
        (["resume=R", "ipc=4"], ["matching=dm", "+note=x", "resume=R", "ipc=4"]),  # argv wins
        (["ipc=4"], ["ipc=4"]),  # no resume: unchanged
    ],
)
def test_resume_alone_re_applies_the_killed_runs_overrides(tmp_path, argv, expected) -> None:
    """Where the killed run went (hydra.*) is never re-applied, the rest is, before argv."""
    from rdd.config.cli import with_resumed_overrides

    run_dir = tmp_path / "killed"
    (run_dir / ".hydra").mkdir(parents=True)
    started = ["ipc=3", "matching=dm", f"hydra.run.dir={run_dir}", "+note=x"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in started))
    (run_dir / "checkpoint.pt").touch()  # resumable (what it holds is checked when loaded)
    fill = [a.replace("R", str(run_dir)) for a in argv]
    assert with_resumed_overrides(fill) == [a.replace("R", str(run_dir)) for a in expected]


def test_the_stop_line_is_not_glued_to_an_open_progress_bar(capsys) -> None:
    """A bar (and a transient inner one) still open when a command stops: the bars are closed
    and the line starts a line of its own, not after the bar's text or its cursor-up code."""
    from tqdm import tqdm

    from rdd.config.cli import fail

    outer = tqdm(total=10, desc="distilling", file=sys.stderr)
    outer.update(3)
    inner = tqdm(total=50, desc="outer steps", leave=False, file=sys.stderr)
    inner.update(7)
    with pytest.raises(SystemExit) as stop:
        fail(Interrupted("distillation stopped; resume with ..."))
    assert stop.value.code == 130
    err = capsys.readouterr().err
    before, line = err.rsplit("interrupted: ", 1)
    assert before.endswith("\n"), repr(err)
    assert line == "distillation stopped; resume with ...\n"
    assert outer.disable and inner.disable  # closed
