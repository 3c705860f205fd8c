"""Shared fixtures: composed configs, a tiny budget, an isolated dataset cache."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

# oneDNN's AVX-512 convolution kernels accumulate in another order than its AVX2 ones: the
# parity fixtures (tests/fixtures/parity_*.pt) were recorded with AVX2 kernels, and on an
# AVX-512 machine the DC and MTT parity cases then differ by ~1e-4 relative (measured:
# they pass with DNNL_MAX_CPU_ISA=AVX2, fail without it). Before torch runs any kernel.
os.environ.setdefault("DNNL_MAX_CPU_ISA", "AVX2")

# Under pytest-xdist (`make test` runs one worker per core) every worker, and every process it
# starts, keeps to one thread: a worker with one thread per core on top of the others would
# oversubscribe the cores (rdd.parallel.shared_cpu). Set before torch reads it.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rdd.config.compose import CONF_DIR  # noqa: E402
from rdd.config.schemas import register_schemas  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg"

# The smallest MTT buffer: one expert of two epochs (see the mtt_buffer fixture).
MTT_EXPERTS = ["experts.num_experts=1", "experts.epochs=2"]

# A budget small enough for tests: one outer iteration, a few evaluation epochs, one network.
TINY = ["ipc=2", "matching.iterations=1", "eval.epochs=3", "eval.num_nets=1", "logger=none"]


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and subprocess) caches datasets in one temporary directory."""
    cache = tmp_path_factory.mktemp("rdd-cache")
    os.environ["RDD_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(autouse=True)
def no_hydra_state_left():
    """Hydra's ``--help`` run in this process (the ``cli`` fixture) leaves Hydra's global
    config set (its jobs restore it, its help does not); code that reads it (rdd.nets.net_name,
    hence the MTT buffer key) would then see that command's choices in every later test. A
    real process runs one command, so every test starts without it."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


def compose_config(
    *overrides: str, output_dir: Path | None = None, config_name: str = "run"
) -> DictConfig:
    """Compose a config like the command line would (outside a Hydra app)."""
    register_schemas()
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=[*overrides, *extra])


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` in a subprocess, as a user would."""
    env = os.environ | {"PYTHONWARNINGS": "ignore", "RDD_LOG_DIR": str(cwd / "logs")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``cli(module, *args, cwd=...)``: ``python -m <module> args`` run in this process (the
    same entry point, argv, working directory and RDD_LOG_DIR as run_module, without the
    seconds a fresh interpreter spends importing torch); returns (returncode, stdout, stderr)
    like a finished subprocess."""

    def call(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        entry = importlib.import_module(f"{module}.__main__" if module == "rdd.report" else module)
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("RDD_LOG_DIR", str(cwd / "logs"))
        monkeypatch.setattr(sys, "argv", [entry.__file__, *args])
        capsys.readouterr()  # what earlier calls printed is not this call's output
        code = 0
        try:
            entry.main(list(args)) if module == "rdd.report" else entry.run_cli(entry.main)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        out = capsys.readouterr()
        return subprocess.CompletedProcess([module, *args], code, out.out, out.err)

    return call


@pytest.fixture(scope="session")
def mtt_buffer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-expert, two-epoch MTT buffer on digits (plain experts); pass
    ``experts.root=<it>`` and MTT_EXPERTS to a run that should use it."""
    from rdd.experts.training import make_buffer

    root = tmp_path_factory.mktemp("buffers")
    # Two epochs reach every target of a run with max_start_epoch 1 (what the runs use).
    settings = ["matching=mtt", "matching.max_start_epoch=1", *MTT_EXPERTS]
    make_buffer(compose_config(*settings, f"experts.root={root}", config_name="buffer"))
    return root
