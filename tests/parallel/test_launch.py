"""Runs started by torchrun (and, alike, srun): every rank runs the command, they share one
run directory, only rank 0 writes, and the objective is the one-process objective."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rdd.config.cli import fail
from rdd.config.errors import Interrupted, UserError
from rdd.parallel.launch import check_num_nodes, launcher_overrides
from rdd.parallel.strategy import trainer_kwargs
from rdd.synset import SyntheticSet
from tests.conftest import REPO

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# A DC + CVaR run over 2 k-means subgroups: sharded per-subgroup real gradients, the
# clustering on rank 0 broadcast (as tests/parallel/test_ddp.py's equality tests).
RUN = ["-m", "rdd.run", "ipc=2", "matching=dc", "matching.iterations=2", "risk=cvar"]
RUN += ["clustering.k=2", "eval.epochs=2", "eval.num_nets=1", "logger=none", "print_config=false"]
RUN += ["trainer.enable_progress_bar=false"]
# every image owned (tests/parallel/test_ddp.py: OWNED_ONLY, and why)
RUN += ["robust.allocation.shared=false", "robust.allocation.min_images=1"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu"]


def launch(*argv: str, cwd: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONWARNINGS": "ignore", "RDD_LOG_DIR": str(cwd / "logs")}
    return subprocess.Popen(
        [*argv], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return out + err


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> SyntheticSet:
    tmp = tmp_path_factory.mktemp("single")
    finish(launch(sys.executable, *RUN, f"hydra.run.dir={tmp / 'run'}", cwd=tmp))
    return SyntheticSet.load(tmp / "run" / "synset.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one_process(single, tmp_path) -> None:
    """`torchrun --standalone --nproc_per_node=2 -m rdd.run trainer=ddp ...` with Hydra's
    default run directory: one directory for both ranks, written by rank 0 only. trainer=ddp's
    devices=auto is the launcher's 2 processes (no trainer.devices=2 needed)."""
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node=2", *RUN, *DDP]
    output = finish(launch(*cmd, cwd=tmp_path))
    runs = list((tmp_path / "logs" / "distill" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("torchrun-"), runs
    assert output.count("outputs: ") == 1  # one summary: rank 1 distils and stops
    launched = SyntheticSet.load(runs[0] / "synset.pt")
    assert torch.equal(launched.labels, single.labels)
    # Float sums in another order (sharded batches), as tests/parallel/test_ddp.py measures.
    assert torch.allclose(launched.images, single.images, rtol=0, atol=1e-4)


def test_a_devices_mismatch_under_torchrun_is_one_line_from_rank0(tmp_path) -> None:
    """trainer.devices=1 for a launch of 2: one `error:` line (rank 0's), before any work,
    no Lightning traceback on every rank and no run directory left (torchrun then adds its
    own report of the failed ranks)."""
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node=2", *RUN, *DDP, "trainer.devices=1"]
    proc = launch(*cmd, cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    lines = [line for line in (out + err).splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(lines) == 1, out + err
    assert "trainer.num_nodes=1 x trainer.devices=1 is 1: set trainer.devices=2" in lines[0]
    assert "exitcode  : 2" in err and "world size" not in out + err
    assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]


def test_errors_every_rank_meets_are_said_by_rank0(monkeypatch, capsys, tmp_path) -> None:
    torchrun_env(monkeypatch, rank=1, world=2)
    run_dir = tmp_path / "run"  # rank 1 made it again after rank 0 had removed it
    run_dir.mkdir()
    with pytest.raises(SystemExit) as stop:
        fail(UserError("a bad value"), run_dir, alike_on_every_rank=True)
    assert stop.value.code == 2 and capsys.readouterr().err == "" and not run_dir.exists()
    with pytest.raises(SystemExit) as stop:  # the launcher stops the ranks when rank 0 fails
        fail(Interrupted(signum=signal.SIGTERM))
    assert stop.value.code == 143 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit):  # its own error: every rank says it
        fail(UserError("only here"))
    assert capsys.readouterr().err == "error: only here\n"
    torchrun_env(monkeypatch, rank=0, world=2)
    with pytest.raises(SystemExit):
        fail(UserError("a bad value"), alike_on_every_rank=True)
    assert capsys.readouterr().err == "error: a bad value\n"


@pytest.mark.slow  # two more torchrun launches: make test-full runs it
def test_two_nodes_of_one_process_each_equal_one_process(single, tmp_path) -> None:
    """Two torchrun launches on localhost as two "nodes" (--nnodes=2 --node_rank=0/1)."""
    port, out = free_port(), tmp_path / "run"
    nodes = [
        launch(
            *TORCHRUN,
            "--nnodes=2",
            f"--node_rank={rank}",
            "--nproc_per_node=1",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            *RUN,
            *DDP,
            "trainer.devices=1",
            "trainer.num_nodes=2",
            f"hydra.run.dir={out}",  # static rendezvous: no shared id, so the dir is given
            cwd=tmp_path,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        finish(node)
    launched = SyntheticSet.load(out / "synset.pt")
    assert torch.allclose(launched.images, single.images, rtol=0, atol=1e-4)


def torchrun_env(monkeypatch, rank: int, world: int, run_id: str = "abc") -> None:
    for key, value in {
        "TORCHELASTIC_RUN_ID": run_id,
        "RANK": rank,
        "LOCAL_RANK": rank,
        "WORLD_SIZE": world,
        "LOCAL_WORLD_SIZE": world,
        "GROUP_RANK": 0,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": 29500,
    }.items():
        monkeypatch.setenv(key, str(value))


def test_launched_ranks_share_a_run_directory_and_only_rank0_writes(monkeypatch) -> None:
    torchrun_env(monkeypatch, rank=0, world=2)
    shared = "hydra.run.dir=${paths.log_dir}/${task_name}/runs/torchrun-abc"
    assert launcher_overrides(["ipc=1"]) == ["ipc=1", shared]
    assert launcher_overrides(["hydra.run.dir=/x"]) == ["hydra.run.dir=/x"]
    torchrun_env(monkeypatch, rank=1, world=2)
    quiet = launcher_overrides(["ipc=1"])
    assert shared in quiet and "hydra.output_subdir=null" in quiet
    assert f"hydra.job_logging.handlers.file.filename={os.devnull}" in quiet


@pytest.mark.parametrize(
    "argv, words",
    [
        (["-m", "seed=0,1"], "a sweep cannot run under torchrun/srun"),
        (["hparams_search=dm_optuna"], "a sweep cannot run under torchrun/srun"),
    ],
)
def test_a_sweep_under_a_launcher_is_refused(monkeypatch, argv, words) -> None:
    torchrun_env(monkeypatch, rank=0, world=2)
    with pytest.raises(UserError, match=words):
        launcher_overrides(argv)


def test_a_static_rendezvous_without_an_id_needs_a_run_dir(monkeypatch) -> None:
    torchrun_env(monkeypatch, rank=0, world=2, run_id="none")
    with pytest.raises(UserError, match="--rdzv_id=<unique name>"):
        launcher_overrides(["ipc=1"])
    assert launcher_overrides(["hydra.run.dir=/shared/run"]) == ["hydra.run.dir=/shared/run"]


def test_auto_devices_are_the_launchers_processes_on_this_node(monkeypatch) -> None:
    """Lightning's own devices=auto is one device on a CPU, which it then finds does not match
    the launcher's world of 2 (a traceback on every rank)."""
    torchrun_env(monkeypatch, rank=1, world=2)
    ddp = {"accelerator": "cpu", "strategy": "ddp", "num_nodes": 1}
    assert trainer_kwargs(OmegaConf.create(ddp | {"devices": "auto"}))["devices"] == 2
    assert trainer_kwargs(OmegaConf.create(ddp | {"devices": 1}))["devices"] == 1  # as given
    monkeypatch.setenv("WORLD_SIZE", "4")  # 2 nodes of 2 processes
    assert trainer_kwargs(OmegaConf.create(ddp | {"devices": "auto"}))["devices"] == 2
    check_num_nodes(OmegaConf.create(ddp | {"devices": "auto", "num_nodes": 2}))
    check_num_nodes(OmegaConf.create(ddp | {"devices": [0, 1], "num_nodes": 2}))
    for key in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key)
    assert trainer_kwargs(OmegaConf.create(ddp | {"devices": "auto"}))["devices"] == "auto"


def test_num_nodes_must_match_the_launchers_world(monkeypatch) -> None:
    torchrun_env(monkeypatch, rank=0, world=2)
    check_num_nodes({"num_nodes": 2, "devices": 1})  # 2 nodes x 1 process
    check_num_nodes({"num_nodes": 1, "devices": "auto"})  # every visible GPU: the launcher's
    with pytest.raises(
        UserError, match=r"set trainer.devices=2 \(or auto\) and trainer.num_nodes=1"
    ):
        check_num_nodes({"num_nodes": 2, "devices": 2})
    with pytest.raises(UserError, match=r"2 processes \(2 on this node\) but .* is 1: set"):
        check_num_nodes({"num_nodes": 1, "devices": 1})
    for key in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key)
    with pytest.raises(UserError, match="needs a launcher"):
        check_num_nodes({"num_nodes": 2, "devices": 1})
