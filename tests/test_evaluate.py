"""rdd.evaluate through the command line: the run's own protocol, imported sets, the random
baseline and its printed summary."""

from __future__ import annotations

import torch
from hydra.utils import instantiate

from rdd.eval.baseline import random_subset
from rdd.eval.protocol import imported_protocol
from rdd.outputs.files import read_metrics
from tests.conftest import TINY, compose_config
from tests.report.test_report import tables

# A protocol that trains in seconds: no shifted or corrupted test sets.
QUICK = ["eval.epochs=2", "eval.num_nets=1", "eval.shifts=[]", "eval.corruptions=[]"]


def test_an_rdd_set_is_evaluated_with_its_own_protocol(tmp_path, cli) -> None:
    run_dir = tmp_path / "run"
    made = cli(
        "rdd.run", *TINY, *QUICK, "eval.dsa=false", "matching=random",
        f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    run_metrics = read_metrics(run_dir)
    out = tmp_path / "eval"
    result = cli("rdd.evaluate", f"synset={run_dir}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(out)
    # The same protocol and seed as the run's own evaluation: the same figure.
    assert metrics["test_acc"] == run_metrics["test_acc"]
    summary = (out / "summary.txt").read_text()
    assert "1 net x 2 epochs, DSA off" in summary and "distill" not in summary
    assert summary.strip() in result.stdout
    out2 = tmp_path / "eval2"
    changed = cli(
        "rdd.evaluate", f"synset={run_dir}", "eval.num_nets=2", f"hydra.run.dir={out2}",
        cwd=tmp_path,
    )  # fmt: skip
    assert "2 nets x 2 epochs, DSA off" in (out2 / "summary.txt").read_text(), changed.stderr


def test_a_plain_file_is_evaluated_with_a_random_baseline(tmp_path, cli) -> None:
    """Gain over random: the random subset, saved as a set of its own and evaluated with the
    same seed, scores exactly the baseline's figure."""
    data = instantiate(compose_config("data.image_size=8").data)
    data.setup()
    synthetic = tmp_path / "set.pt"
    torch.save({"images": torch.rand(20, 1, 8, 8), "labels": torch.arange(10).repeat(2)}, synthetic)
    common = ["data=digits", "data.image_size=8", *QUICK]
    out = tmp_path / "eval"
    result = cli(
        "rdd.evaluate", f"synset={synthetic}", "normalization=pixels", "baseline=random",
        *common, f"hydra.run.dir={out}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(out)
    assert metrics["gain_over_random"] == metrics["test_acc"] - metrics["random_test_acc"]
    assert "gain over random" in result.stdout and "plain set" in result.stdout
    x, y = random_subset(data.train_x, data.train_y, torch.full((10,), 2), seed=0)
    subset = tmp_path / "subset.pt"
    torch.save({"images": x, "labels": y}, subset)
    again = cli(
        "rdd.evaluate", f"synset={subset}", "normalization=dataset", *common,
        f"hydra.run.dir={tmp_path / 'subset_eval'}", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    direct = read_metrics(tmp_path / "subset_eval")
    assert direct["test_acc"] == metrics["random_test_acc"]


def test_imported_and_re_evaluated_sets_are_reported_beside_the_run(tmp_path, cli) -> None:
    """rdd.report reads rdd.evaluate's directories: an imported set gets a row of its own, a
    re-evaluated rdd set joins its run's row as a second run of the same seed."""
    runs = tmp_path / "runs"
    made = cli(
        "rdd.run", *TINY, *QUICK, "matching=random", f"hydra.run.dir={runs / 'run'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    synthetic = tmp_path / "set.pt"
    torch.save(
        {"images": torch.rand(20, 1, 16, 16), "labels": torch.arange(10).repeat(2)}, synthetic
    )
    imported = cli(
        "rdd.evaluate", f"synset={synthetic}", "normalization=pixels", "data=digits", *QUICK,
        f"hydra.run.dir={runs / 'imported'}", cwd=tmp_path,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-2000:]
    [protocol] = [line for line in imported.stdout.splitlines() if line.startswith("protocol:")]
    assert protocol.startswith("protocol: as `python -m rdd.run data=digits` evaluates its sets;")
    assert "eval.epochs=2 eval.num_nets=1" in protocol  # what the command line changed
    again = cli(
        "rdd.evaluate", f"synset={runs / 'run'}", f"hydra.run.dir={runs / 'again'}", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "protocol: the run's own, stored with the set" in again.stdout
    report = cli("rdd.report", str(runs), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "found 3 runs in 2 groups" in report.stdout and "note:" not in report.stdout
    [main] = tables((runs / "report" / "report.md").read_text())[:1]
    assert [row[:5] for row in main[1:]] == [
        ["digits", "plain (imported)", "2", "none", "1"],
        ["digits", "random", "2", "none", "1 (2 runs)"],
    ]
    assert main[1][5] == f"{read_metrics(runs / 'imported')['test_acc']:.2f} ± 0.00"


def test_an_imported_set_gets_the_protocol_of_rdd_runs_on_its_dataset() -> None:
    """digits' rdd runs evaluate 3 networks x 300 epochs (budget/digits.yaml), CIFAR-10's the
    published 5 x 1000; eval keys on the command line still win."""

    def protocol(*overrides: str, method: str = "dc"):
        cfg = compose_config("synset=x", *overrides, config_name="evaluate")
        return imported_protocol(cfg.eval, list(overrides), method)

    digits, line = protocol("data=digits")
    assert (digits.epochs, digits.num_nets) == (300, 3)
    assert line == "as `python -m rdd.run data=digits matching=dc` evaluates its sets"
    shorter, line = protocol("data=digits", "eval.epochs=7", method="plain")
    assert (shorter.epochs, shorter.num_nets) == (7, 3)
    assert (
        line
        == "as `python -m rdd.run data=digits` evaluates its sets; eval.epochs=7 from the command line"
    )
    cifar, _ = protocol("data=cifar10")
    assert (cifar.epochs, cifar.num_nets) == (1000, 5)
    mtt, _ = protocol("data=digits", method="mtt")  # digits' MTT runs use the fixed lr too
    assert mtt.lr_from_synset is False and digits.lr_from_synset is True
