"""An installed rdd (a wheel, not this checkout) carries its configs and runs anywhere."""

from __future__ import annotations

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
