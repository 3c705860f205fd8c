"""The command line as a user drives it: bad input, a Hydra multirun, rdd.evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from rdd.outputs.files import read_metrics
from tests.conftest import TINY, run_module


def assert_one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("data=imagenet21k", ("unknown data 'imagenet21k'", "cifar10")),
        ("net=resnet1000", ("unknown net 'resnet1000'", "convnet")),
        ("matching=magic", ("unknown matching 'magic'", "dsa")),
        ("ipc=0", ("ipc must be a positive integer",)),
        ("ipc=-3", ("ipc must be a positive integer",)),
    ],
)
def test_bad_names_and_values_fail_in_one_line(
    override: str, words: tuple[str, ...], tmp_path, cli
) -> None:
    result = cli("rdd.run", override, cwd=tmp_path)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "logs").exists()  # failed before writing anything


def test_a_sweep_with_one_bad_value_fails_before_any_job(tmp_path, cli) -> None:
    result = cli("rdd.run", "-m", "matching=dc,dcc", cwd=tmp_path)
    assert_one_line_error(result, "unknown matching 'dcc'")


def test_missing_data_root(tmp_path, cli) -> None:
    result = cli(
        "rdd.run", *TINY, "data=cifar10", f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path
    )
    assert_one_line_error(result, "nowhere", "data.root")


def test_root_without_the_expected_layout(tmp_path, cli) -> None:
    root = tmp_path / "stuff"
    root.mkdir()
    (root / "notes.txt").write_text("not a dataset")
    result = cli("rdd.run", *TINY, "data=cifar10", f"data.root={root}", cwd=tmp_path)
    assert_one_line_error(result, "stuff")


def test_a_finished_run_is_not_overwritten_from_the_command_line(tmp_path, cli) -> None:
    run_dir = tmp_path / "done"
    first = cli("rdd.run", *TINY, "matching=random", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = (run_dir / "metrics.json").read_bytes()
    again = cli("rdd.run", *TINY, "matching=dc", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_line_error(again, "already holds a run")
    assert (run_dir / "metrics.json").read_bytes() == metrics


def test_multirun_sweeps_methods_and_seeds(tmp_path) -> None:
    result = run_module(
        "rdd.run",
        "-m",
        "matching=dc,dsa,random",
        "seed=0,1",
        *TINY,
        "ipc=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(jobs) == 6
    seen = set()
    for job in jobs:
        assert {"test_acc", "test_acc_std", "val_acc"} <= read_metrics(job).keys()
        cfg = yaml.safe_load((job.parent / "config.yaml").read_text())
        seen.add((cfg["matching"]["name"], cfg["seed"]))
    assert seen == {(m, s) for m in ("dc", "dsa", "random") for s in (0, 1)}


def test_evaluate_a_saved_set(tmp_path, cli) -> None:
    run_dir = tmp_path / "run"
    made = cli("rdd.run", *TINY, "matching=random", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "eval"
    result = cli(
        "rdd.evaluate",
        f"synset={run_dir}",
        "eval.epochs=3",
        "eval.num_nets=2",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(out)
    assert 0 <= metrics["test_acc"] <= 100 and "convnet_w32/test_acc" in metrics


def test_evaluate_refuses_a_corrupt_or_foreign_file(tmp_path, cli) -> None:
    bad = tmp_path / "synset.pt"
    bad.write_bytes(b"definitely not a zip archive")
    assert_one_line_error(
        cli("rdd.evaluate", f"synset={bad}", cwd=tmp_path),
        "is neither a torch.save file nor a pickle",
    )
    png = tmp_path / "picture.png"
    Image.new("RGB", (4, 4)).save(png)
    assert_one_line_error(cli("rdd.evaluate", f"synset={png}", cwd=tmp_path), "picture.png")
    assert_one_line_error(
        cli("rdd.evaluate", f"synset={tmp_path / 'none.pt'}", cwd=tmp_path), "not found"
    )


def test_the_runs_messages_reach_the_console_run_log_and_summary_txt(tmp_path) -> None:
    out = tmp_path / "r"
    result = run_module("rdd.run", *TINY, "matching=dc", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # The console: plain lines (no time stamps); the table's rows start the line.
    console = result.stdout.splitlines()
    assert any(line.startswith("net ") and "clean %" in line for line in console)
    assert any(line.startswith("convnet_w32 ") for line in console)
    assert not any("[INFO]" in line for line in console)
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("rdd | digits") and "clean %" in summary
    assert f"outputs: {out}" in summary
    # run.log: the same messages, time-stamped (Hydra's job logging).
    run_log = (out / "run.log").read_text()
    for words in ("rdd.run: dc on digits, ipc 2", "distill: iteration 1/1, matching loss"):
        assert words in run_log, words
    assert summary.splitlines()[-2] in run_log and "[rdd.run][INFO]" in run_log
    assert "━" not in run_log and "evaluating" not in run_log  # progress bars: console only
    assert Path(out / "synset.png").is_file()


def test_a_net_config_on_the_search_path_is_a_run_net_and_an_evaluation_net(tmp_path, cli) -> None:
    """eval.nets names `net` options as Hydra finds them (no registry of its own): one added
    with hydra.searchpath serves as the run's net and as an evaluation architecture."""
    (tmp_path / "extra" / "net").mkdir(parents=True)
    (tmp_path / "extra" / "net" / "tiny_mlp.yaml").write_text(
        "_target_: rdd.nets.mlp.MLP\n_partial_: true\nwidth: 16\n"
    )
    out = tmp_path / "run"
    result = cli(
        "rdd.run",
        *TINY,
        "matching=random",
        f"hydra.searchpath=[file://{tmp_path / 'extra'}]",
        "net=tiny_mlp",
        "eval.nets=[tiny_mlp,convnet_w32]",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(out)
    assert {"tiny_mlp/test_acc", "convnet_w32/test_acc"} <= metrics.keys()
