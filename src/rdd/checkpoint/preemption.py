"""Preemption-safe distillation: SIGTERM or SIGUSR1 stop a run at its next safe point, with a
checkpoint, a one-line message that says how to continue, and exit status 128 + the signal.

What sends them: SLURM preemption, ``scancel`` and ``timeout`` (SIGTERM); SLURM's warning
before the time limit (``#SBATCH --signal=USR1@90``). While the distillation trains, a signal
only notes the request; the run stops at the next *safe point*:

- the end of every iteration: the checkpoint is the state after it (the one a periodic
  checkpoint would hold);
- for methods with many image steps per iteration (``Matcher.safe_points_inside``: DC/DSA, one
  safe point between outer steps), inside an iteration: the checkpoint is the state as of the
  last finished iteration, kept at each iteration's start, and the resumed run redoes the
  stopped iteration from it, bit for bit. So the wait is one outer step, not one iteration.

Ctrl-C (SIGINT) still stops at once (``Interrupted``), keeping that copy when there is one.

DDP: at every safe point the ranks all-reduce whether any of them was signalled (one tiny
collective), so all stop at the same point; rank 0 writes. The main process forwards a signal
it receives to its spawned ranks (Lightning's launcher ``kill``) and gets the stop back through
:class:`rdd.parallel.strategy.ReplicatedDDPStrategy`'s launcher.

Why not Lightning's own handling (``_SignalConnector``): its SIGTERM handler runs a broadcast
inside the signal handler (a collective that may pair with another rank's all-reduce in the
middle of a matching step), each rank then stops at its own batch boundary, the stop is a
``SystemExit`` with status 0, and under SLURM its SIGUSR1 handler writes a Lightning checkpoint
into the working directory and requeues the job. Its handlers are replaced while rdd's Trainer
trains (:meth:`PreemptionCheckpoint.on_train_start`) and restored by Lightning at teardown.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch

from rdd.config.errors import Interrupted
from rdd.parallel.distributed import all_reduce_max, rank
from rdd.utils.io import atomic_write

# What asks a run to checkpoint and stop (SIGINT stays Ctrl-C: rdd.config.cli.run_cli).
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_requested: int | None = None  # the first of SIGNALS this process received while deferring
_forward: list[Callable[[int], None]] = []  # where the main process passes it on (DDP ranks)


def note_request(signum: int, frame: Any = None) -> None:
    """The deferring handler: remember the signal (and pass it on to spawned ranks)."""
    global _requested
    if _requested is None:
        _requested = int(signum)
    for forward in _forward:
        forward(signum)


def requested() -> int | None:
    """The signal this process was asked to stop by, if any."""
    return _requested


def defer_signals() -> None:
    """Make SIGTERM and SIGUSR1 only note a request in this process (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, note_request)


@contextlib.contextmanager
def deferred_signals(trainer: L.Trainer, active: bool = True) -> Iterator[None]:
    """While ``trainer`` distils, SIGTERM/SIGUSR1 wait for a safe point; a DDP launcher's
    spawned ranks get them forwarded. A fit that fails after a signal (e.g. a rank killed
    before it could defer) is reported as that signal's interruption.

    ``active=False`` (no PreemptionCheckpoint to act on a request): signals act as before.
    """
    global _requested
    if not active:
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    launcher = trainer.strategy.launcher
    _requested = None
    _forward[:] = [launcher.kill] if launcher is not None else []
    defer_signals()
    try:
        yield
    except Interrupted:
        raise
    except Exception:
        if _requested is None:
            raise
        raise Interrupted(signum=_requested) from None
    finally:
        _forward.clear()
        _requested = None
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def agreed_request(device: torch.device) -> int | None:
    """The signal any rank was asked to stop by (the same answer on every rank), or None."""
    signum = all_reduce_max(_requested or 0, device)
    return signum or None


class PreemptionCheckpoint(L.Callback):
    """Stops the distillation at the next safe point after SIGTERM/SIGUSR1, with a checkpoint
    of the training state at ``path`` (rank 0), whatever ``checkpoint_every`` is.

    Args:
        path: the run's checkpoint file.
        meta: what the checkpoint stores beside the state (rdd.checkpoint.state.Checkpoints.meta).
        state_of: ``rdd.checkpoint.state.training_state``: the learner's state, ``next_iteration``.
        written: called after each checkpoint this callback writes.
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        state_of: Callable[..., dict],
        written: Callable[[], None] = lambda: None,
    ) -> None:
        self.path, self.meta, self.state_of, self.written = path, meta, state_of, written
        self.last_finished: dict | None = None  # the state as of the iteration's start

    def on_train_start(self, trainer: L.Trainer, learner: Any) -> None:
        defer_signals()  # in place of Lightning's handlers, in every process that trains
        if learner.matcher.safe_points_inside:
            learner.on_safe_point = lambda: self.stop_if_requested(learner, mid_iteration=True)

    def on_train_batch_start(self, trainer, learner, batch, batch_idx: int) -> None:
        if learner.matcher.safe_points_inside and rank() == 0:
            # A copy: optimizer and risk states are live tensors that the iteration updates.
            self.last_finished = copy.deepcopy(self.state_of(learner, int(batch)))

    def on_train_batch_end(self, trainer, learner, outputs, batch, batch_idx: int) -> None:
        self.stop_if_requested(learner, mid_iteration=False)

    def stop_if_requested(self, learner: Any, mid_iteration: bool) -> None:
        """Checkpoint and stop if any rank was asked to: mid-iteration, the state as of the
        iteration's start; at its end, the state after it."""
        signum = agreed_request(learner.device)
        if signum is None:
            return
        at = learner.iteration if mid_iteration else learner.iteration + 1
        if rank() == 0:
            self.write(self.last_finished if mid_iteration else self.state_of(learner, at), signum)
        raise Interrupted(
            f"distillation stopped with {at} of {learner.matcher.iterations} iterations done",
            signum,
        )

    def on_exception(self, trainer, learner, exception: BaseException) -> None:
        # Ctrl-C in one process: keep the state as of the last finished iteration, if held
        # and newer than the checkpoint on disk.
        ctrl_c = isinstance(exception, Interrupted) and exception.signum == signal.SIGINT
        if ctrl_c and self.last_finished is not None and rank() == 0:
            self.write_if_newer(self.last_finished, signal.SIGINT)

    def write_if_newer(self, state: dict, signum: int) -> None:
        if state["next_iteration"] > iteration_on_disk(self.path):
            self.write(state, signum)

    def write(self, state: dict, signum: int) -> None:
        state = state | {"meta": self.meta, "stopped_by": int(signum)}
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        self.written()


def iteration_on_disk(path: Path) -> int:
    """The next iteration of the checkpoint at ``path`` (-1: none or unreadable)."""
    try:
        return int(torch.load(path, weights_only=True, mmap=True)["next_iteration"])
    except Exception:  # missing, damaged: anything is newer
        return -1


def stopped_distillation(err: Interrupted, path: Path) -> Interrupted:
    """What an interrupted distillation kept, and how to continue it (one line)."""
    what = str(err) or "distillation stopped"
    if not path.exists():
        return err.again(f"{what} before its first checkpoint (checkpoint_every); nothing kept")
    again = "" if err.signum == signal.SIGINT else " (the same command with resume=auto)"
    return err.again(
        f"{what}; its last checkpoint is {path}: continue with python -m rdd.run "
        f"resume={path.parent}{again}"
    )
