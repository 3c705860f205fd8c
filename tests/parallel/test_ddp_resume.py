"""Resume under DDP: a 2-rank gloo run stopped by a signal and resumed equals the
uninterrupted 2-rank run; the checkpoint holds only replicated state, so it also resumes on
another number of processes (equal to DDP's own tolerance against one process)."""

from __future__ import annotations

import signal

import pytest
import torch

from rdd.synset import SyntheticSet
from tests.checkpoint.test_preemption import finish, signal_after_first_checkpoint, start
from tests.parallel.test_ddp import DDP

# DC + CVaR over k-means subgroups: sharded per-subgroup real gradients, rank-0 clustering.
ROBUST = ["ipc=2", "matching=dc", "matching.iterations=3", "matching.batch_real=32", "risk=cvar"]
ROBUST += [
    "clustering.k=2",
    "clustering.every=2",
    "eval.epochs=2",
    "eval.num_nets=1",
    "logger=none",
]
ROBUST += ["eval.corruptions=[]", "trainer.enable_progress_bar=false", "checkpoint_every=1"]


def images(run_dir) -> torch.Tensor:
    return SyntheticSet.load(run_dir / "synset.pt").images


@pytest.mark.slow  # ~2 min idle (4.5 under load): make test-full runs it
def test_a_stopped_ddp_run_resumes_to_the_uninterrupted_ddp_set(tmp_path) -> None:
    logs = tmp_path / "logs"
    finish(start(tmp_path, *DDP, *ROBUST, f"hydra.run.dir={logs / 'whole'}"))
    stopped = logs / "stopped"
    _, err = signal_after_first_checkpoint(
        start(tmp_path, *DDP, *ROBUST, f"hydra.run.dir={stopped}"), stopped, signal.SIGUSR1
    )
    last = err.strip().splitlines()[-1]
    # "... stopped with K of N iterations done; ..." or, when the stop reaches the main
    # process through the spawn launcher first, "... stopped; ..."; either names the checkpoint.
    assert last.startswith("stopped by SIGUSR1: distillation stopped"), err[-3000:]
    assert "its last checkpoint is" in last and "resume=" in last, last
    assert "Traceback" not in err
    state = torch.load(stopped / "checkpoint.pt", weights_only=True)
    assert state["stopped_by"] == signal.SIGUSR1 and 1 <= state["next_iteration"] <= 3
    # Under DDP again (resume=<dir> alone re-applies the stopped run's overrides).
    finish(start(tmp_path, f"resume={stopped}", f"hydra.run.dir={logs / 'resumed'}"))
    assert torch.equal(images(logs / "whole"), images(logs / "resumed"))
    # On one process: the same state, summed in another order (as any DDP vs 1 process run).
    # A second continuation of the stopped run, on purpose: its CONTINUED.txt goes first.
    (stopped / "CONTINUED.txt").unlink()
    single = ["trainer=cpu", "trainer.devices=1", f"hydra.run.dir={logs / 'single'}"]
    finish(start(tmp_path, f"resume={stopped}", *single))
    assert torch.allclose(images(logs / "whole"), images(logs / "single"), rtol=0, atol=1e-4)
