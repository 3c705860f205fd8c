"""Spawned processes die with their parent (rdd.parallel.lifeline): a main process killed with SIGKILL
leaves no DDP rank and no evaluation worker running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds child processes through /proc"
)

# Every child must be gone this long after its parent was killed.
GRACE_S = 5.0


def stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...], or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def spawned_children(parent: int) -> list[int]:
    """The processes ``parent`` started through multiprocessing's spawn."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is None or int(fields[1]) != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has exited


def kill_parent_and_watch(proc: subprocess.Popen, children: list[int]) -> list[int]:
    """SIGKILL ``proc``; the children still alive GRACE_S later (killed then, so that a
    failing test leaves nothing running)."""
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + GRACE_S
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in children if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


def start_run(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONWARNINGS": "ignore", "RDD_LOG_DIR": str(tmp_path / "logs")}
    return subprocess.Popen(
        [sys.executable, "-m", "rdd.run", *overrides, "logger=none", "print_config=false"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.2)


def test_ddp_ranks_die_with_a_killed_main_process(tmp_path) -> None:
    """Two spawned gloo ranks distilling, the main process killed with SIGKILL: both ranks
    are gone within a few seconds."""
    out = tmp_path / "run"
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "ipc=2"]
    overrides += ["matching=dm", "matching.iterations=1000000", "checkpoint_every=1"]
    proc = start_run(tmp_path, *overrides, f"hydra.run.dir={out}")
    # The first checkpoint: both ranks are distilling.
    wait_for(lambda: (out / "checkpoint.pt").exists(), proc, "checkpoint")
    ranks = spawned_children(proc.pid)
    assert len(ranks) == 2, ranks
    assert kill_parent_and_watch(proc, ranks) == []


def test_evaluation_workers_die_with_a_killed_main_process(tmp_path) -> None:
    """Two evaluation workers (eval.devices=2 on the CPU) training long networks, the main
    process killed with SIGKILL: both workers are gone within a few seconds."""
    out = tmp_path / "run"
    overrides = ["matching=random", "ipc=2", "eval.devices=2", "eval.num_nets=2"]
    overrides += ["eval.epochs=1000000", f"hydra.run.dir={out}"]
    proc = start_run(tmp_path, *overrides)
    wait_for(lambda: len(spawned_children(proc.pid)) == 2, proc, "two workers")
    workers = spawned_children(proc.pid)
    # Past their start-up: a worker imports what the main process had imported (and did
    # less: no config, no data) before it trains, so its CPU time then exceeds the main's.
    startup = cpu_seconds(proc.pid) + 1
    wait_for(lambda: min(cpu_seconds(pid) for pid in workers) > startup, proc, "training")
    assert kill_parent_and_watch(proc, workers) == []


CHILD_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    import rdd.parallel.lifeline

    def child(use_kernel):
        if not use_kernel:  # the fallback of systems without prctl
            rdd.parallel.lifeline.kernel_kills_on_parent_death = lambda: False
        rdd.parallel.lifeline.die_with_parent()
        time.sleep(600)

    if __name__ == "__main__":
        process = multiprocessing.get_context("spawn").Process(
            target=child, args=(sys.argv[1] == "kernel",)
        )
        process.start()
        print(process.pid, flush=True)
        time.sleep(600)
    """
)


@pytest.mark.parametrize("mechanism", ["kernel", "watchdog"])
def test_a_spawned_child_dies_with_its_parent(tmp_path, mechanism) -> None:
    """Both ways (Linux's parent-death signal, the polling thread elsewhere) end the child."""
    script = tmp_path / "parent.py"
    script.write_text(CHILD_SCRIPT)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, str(script), mechanism], env=env, stdout=subprocess.PIPE, text=True
    )
    child = int(proc.stdout.readline())
    time.sleep(1)  # the child has asked to die with its parent
    assert alive(child)
    assert kill_parent_and_watch(proc, [child]) == []
