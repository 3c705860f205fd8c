"""Spawned processes that die with the process that spawned them.

A spawned process outlives its parent unless it asks otherwise: kill the main process of a
DDP run (``kill -9``, the out-of-memory killer, a closed terminal's process group left behind)
and its ranks keep training, each holding its memory (12 GB a rank on CIFAR-10), with nobody
left to collect what they make. So every process rdd spawns (DDP ranks:
rdd.parallel.strategy.StoppableLauncher; evaluation workers: rdd.eval.parallel) calls
:func:`die_with_parent` first: on Linux the kernel kills it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls ``os.getppid()``.

The child is killed outright, not sent SIGTERM: a rank defers SIGTERM to its next safe point
(rdd.checkpoint.preemption), which can be an iteration away, and with its parent gone nothing can take
its result; what it wrote before is complete (every write is atomic), so a run resumes from
its last checkpoint.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 0.5  # how often the fallback looks for its parent


def die_with_parent() -> None:
    """End this process when the process that spawned it (``multiprocessing``) dies; a no-op
    in a process that multiprocessing did not start (a torchrun or srun rank has its own
    launcher to watch it)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if not kernel_kills_on_parent_death():
        threading.Thread(target=watch_parent, args=(parent.pid,), daemon=True).start()
    # The parent may have died before the request: then no signal would come.
    if os.getppid() != parent.pid:
        os._exit(1)


def kernel_kills_on_parent_death() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where it cannot.

    The kernel sends it when the parent *thread* that spawned this process ends: rdd spawns
    from the thread that runs the job (Lightning's launcher, the evaluation's pool), which
    outlives its children."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc with prctl (e.g. a static interpreter)
        return False


def watch_parent(parent_pid: int) -> None:
    """The portable fallback: once this process has another parent (it was re-parented to
    init or a subreaper), its own has died; exit at once, as the kernel would kill it."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os._exit(1)
