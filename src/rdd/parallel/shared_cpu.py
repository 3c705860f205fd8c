"""A run's warning when other processes already keep this machine's cores busy.

torch runs one thread per core by default. Two such jobs on the same cores do not share them
evenly: their threads wait for each other at every parallel region, and on a 2-core machine
one evaluation network took 78 s instead of 6.7 s with one thread per job (issue 26). Where
rdd starts the processes itself it gives each its share of the cores (``eval.devices``
workers: rdd.eval.parallel; DDP ranks: Lightning; torchrun sets ``OMP_NUM_THREADS=1``).
Jobs started independently cannot know of each other, and choosing the thread count from
the machine's load would make a CPU run's numbers depend on it (a kernel may sum in another
order on another number of threads), so a run only says what it sees and what to set.
"""

from __future__ import annotations

import os

import psutil
import torch

# How long the machine's CPU use is sampled at a run's start (seconds).
SAMPLE_SECONDS = 0.1
# Cores counted as free below this use (a busy core is one fully used by another process).
NOISE = 0.5


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU time the machine's processes use now (this one sleeps meanwhile)."""
    return psutil.cpu_percent(interval=seconds) / 100.0 * (psutil.cpu_count() or 1)


def shared_cpu_warning() -> str | None:
    """Why this run's threads will compete with other processes for the cores, or None.

    Silent when ``OMP_NUM_THREADS`` is set (the user chose) and for one thread.
    """
    threads = torch.get_num_threads()
    if "OMP_NUM_THREADS" in os.environ or threads <= 1:
        return None
    cores = psutil.cpu_count() or 1
    busy = busy_cores()
    free = max(0.0, cores - busy)
    if threads <= free + NOISE:
        return None
    share = max(1, int(free))
    return (
        f"other processes keep {busy:.1f} of this machine's {cores} cores busy and this run "
        f"uses {threads} threads (one per core): jobs that share cores slow each other down "
        f"many times over; give each its share, e.g. OMP_NUM_THREADS={share} python -m rdd.run ..."
    )
