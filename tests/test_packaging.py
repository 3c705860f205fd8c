"""An installed rdd (a wheel, not this checkout) carries its configs and runs anywhere."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys

from tests.conftest import REPO


def test_a_wheel_installed_elsewhere_runs_from_any_directory(tmp_path) -> None:
    # Build from a copy, so that the checkout gets no build/ folder.
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], check=True
    )
    (wheel,) = wheels.glob("rdd-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = os.environ | {"PYTHONPATH": str(site)}  # before the checkout's editable install
    where = subprocess.run(
        [sys.executable, "-c", "import rdd; print(rdd.__file__)"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))
    tiny = ["matching=random", "ipc=1", "eval.epochs=1", "eval.num_nets=1", "eval.shifts=[]"]
    tiny += ["eval.corruptions=[]", "net=convnet_w32", f"hydra.run.dir={outside / 'run'}"]
    run = subprocess.run(
        [sys.executable, "-m", "rdd.run", *tiny, "trainer.enable_progress_bar=false"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (outside / "run" / "metrics.json").is_file()
    check_console_scripts(site, outside, env)


SCRIPTS = {
    "rdd-run": "rdd.scripts:run",
    "rdd-evaluate": "rdd.scripts:evaluate",
    "rdd-buffer": "rdd.scripts:buffer",
    "rdd-report": "rdd.scripts:report",
}


def check_console_scripts(site, cwd, env) -> None:
    """The wheel declares the console scripts, they resolve, and the installed ones run."""
    (dist,) = importlib.metadata.distributions(path=[str(site)])
    scripts = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    assert {name: ep.value for name, ep in scripts.items()} == SCRIPTS
    assert all(callable(ep.load()) for ep in scripts.values())
    for name, words in (("rdd-run", "matching: "), ("rdd-report", "runs=")):
        shown = subprocess.run(
            [site / "bin" / name, "--help"], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert shown.returncode == 0 and words in shown.stdout, shown.stderr[-2000:]
    assert not (cwd / "logs").exists()
