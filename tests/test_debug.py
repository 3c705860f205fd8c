"""debug= presets (conf/debug): a tiny budget that wins over the CPU budgets and overlays."""

from __future__ import annotations

import time

import pytest
import yaml

from rdd.outputs.files import read_metrics
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("overrides", "iterations"),
    [
        (["debug=default"], 2),  # budget_matching/digits_dc.yaml says 6
        (["debug=default", "matching=dm"], 2),  # ... digits_dm.yaml 300
        (["debug=default", "experiment=cifar10_cpu_smoke"], 2),
        (["debug=fdr", "matching=idm"], 1),
    ],
)
def test_a_debug_preset_wins_over_budgets_and_overlays(overrides, iterations) -> None:
    cfg = compose_config(*overrides)
    assert cfg.matching.iterations == iterations
    assert cfg.eval.epochs == (1 if "debug=fdr" in overrides else 5)  # budget/digits.yaml: 300
    assert cfg.eval.num_nets == 1 and cfg.ipc == 1 and cfg.checkpoint_every == 0
    assert list(cfg.eval.shifts) == [] and list(cfg.eval.corruptions) == []
    assert dict(cfg.logger) == {} and cfg.task_name == "debug"


def test_the_command_line_wins_over_a_debug_preset() -> None:
    cfg = compose_config("debug=default", "eval.epochs=7", "ipc=3", "logger=csv")
    assert cfg.eval.epochs == 7 and cfg.ipc == 3 and "csv" in cfg.logger


def test_a_debug_run_finishes_in_seconds_and_prints_its_config(tmp_path, cli) -> None:
    start = time.perf_counter()
    result = cli("rdd.run", "debug=default", cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs" / "debug" / "runs").iterdir()  # task_name: debug
    assert {"test_acc", "val_acc"} <= read_metrics(run_dir).keys()
    assert not (run_dir / "csv").exists()  # logger none
    assert not (run_dir / "checkpoint.pt").exists()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["matching"]["iterations"] == 2 and cfg["eval"]["num_nets"] == 1
    # The config tree is printed first, and kept with the run.
    tree = (run_dir / "config_tree.log").read_text()
    assert result.stdout.startswith(tree)
    assert "├── matching" in tree and "iterations: 2" in tree and "task_name: debug" in tree
    assert tree.index("├── data") < tree.index("├── matching") < tree.index("├── paths")
    # ~15 s on two shared cores (measured); the bound only catches a preset that stopped
    # shrinking the budget (the digits CPU budget takes minutes).
    assert seconds < 90, seconds


def test_print_config_false_prints_no_tree(tmp_path, cli) -> None:
    result = cli("rdd.run", "debug=fdr", "print_config=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "├── matching" not in result.stdout
    (run_dir,) = (tmp_path / "logs" / "debug" / "runs").iterdir()
    assert not (run_dir / "config_tree.log").exists()
