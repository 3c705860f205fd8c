"""A run warns at start when other processes keep the cores busy and it would add one thread
per core on top of them (a second job on 2 cores made an evaluation network 12x slower)."""

from __future__ import annotations

import pytest
import torch

from rdd.parallel import shared_cpu
from tests.conftest import TINY


@pytest.fixture
def machine(monkeypatch):
    """``machine(cores, busy, threads)``: what the check sees, without sampling the real one."""

    def set_up(cores: int, busy: float, threads: int) -> None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(shared_cpu.psutil, "cpu_count", lambda: cores)
        monkeypatch.setattr(shared_cpu, "busy_cores", lambda seconds=0.1: busy)
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)

    return set_up


def test_threads_on_busy_cores_are_a_warning_with_the_fix(machine) -> None:
    machine(cores=2, busy=2.0, threads=2)  # another 2-thread job on a 2-core machine
    warning = shared_cpu.shared_cpu_warning()
    assert warning.startswith("other processes keep 2.0 of this machine's 2 cores busy")
    assert "uses 2 threads" in warning and "e.g. OMP_NUM_THREADS=1 python -m rdd.run" in warning
    machine(cores=16, busy=8.0, threads=16)  # half the cores taken: the other half is its share
    assert "OMP_NUM_THREADS=8" in shared_cpu.shared_cpu_warning()


def test_free_cores_a_chosen_thread_count_or_one_thread_are_silent(machine, monkeypatch) -> None:
    machine(cores=2, busy=0.3, threads=2)  # an idle machine, up to noise
    assert shared_cpu.shared_cpu_warning() is None
    machine(cores=16, busy=4.0, threads=8)  # the cores it uses are free
    assert shared_cpu.shared_cpu_warning() is None
    machine(cores=2, busy=2.0, threads=1)
    assert shared_cpu.shared_cpu_warning() is None
    machine(cores=2, busy=2.0, threads=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice
    assert shared_cpu.shared_cpu_warning() is None


def test_the_busy_cores_are_measured_not_assumed() -> None:
    busy = shared_cpu.busy_cores(0.05)
    assert 0.0 <= busy <= shared_cpu.psutil.cpu_count()


def test_a_run_on_busy_cores_says_so_after_its_start_line(machine, tmp_path, cli) -> None:
    machine(cores=2, busy=1.9, threads=2)
    result = cli("rdd.run", *TINY, "matching=random", "print_config=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rdd.run: random"))
    assert lines[start + 1].startswith("warning: other processes keep 1.9 of this machine's 2")
