"""hparams_search= (conf/hparams_search): Optuna searches over a validation figure."""

from __future__ import annotations

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

from rdd.config.compose import compose_or_explain
from rdd.outputs.files import read_metrics
from tests.config.test_cli import assert_one_line_error

TINY_SEARCH = ["hparams_search=dm_optuna", "debug=default", "matching.iterations=1"]
TINY_SEARCH += ["print_config=false"]


def test_a_tiny_search_on_digits_writes_its_best_params(tmp_path, cli) -> None:
    sweep = tmp_path / "sweep"
    # No -m: the search sets hydra.mode=MULTIRUN itself.
    result = cli(
        "rdd.run",
        *TINY_SEARCH,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(sweep.glob("*/metrics.json"))
    assert len(jobs) == 2
    tried = [yaml.safe_load((j.parent / "config.yaml").read_text())["matching"] for j in jobs]
    assert all(m["name"] == "dm" and 0.1 <= m["lr_img"] <= 10 for m in tried)
    assert tried[0]["lr_img"] != tried[1]["lr_img"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scores = [read_metrics(j)["val_acc"] for j in jobs]
    assert best["best_value"] == pytest.approx(max(scores))
    assert best["best_params"]["matching.lr_img"] in [m["lr_img"] for m in tried]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("data.val_fraction=0", ("data.val_fraction=0", "set data.val_fraction=0.1")),
        ("optimized_metric=val_accc", ("val_accc", "choose one of val_acc")),
        ("optimized_metric=test_acc", ("test_acc", "not a validation figure")),
    ],
)
def test_a_search_on_a_metric_the_run_does_not_report_fails_first(
    override: str, words: tuple[str, ...], tmp_path, cli
) -> None:
    result = cli("rdd.run", *TINY_SEARCH, override, cwd=tmp_path)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "logs").exists()  # no sweep dir, no job


def test_a_grid_sweep_may_leave_val_acc_out(tmp_path, cli) -> None:
    """The check is for sweepers that optimise a return value; `-m` grids ignore it."""
    out = tmp_path / "grid"
    args = ["-m", "debug=fdr", "matching=random", "data.val_fraction=0", f"hydra.sweep.dir={out}"]
    result = cli("rdd.run", *args, "print_config=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val_acc" not in read_metrics(out / "0")


@pytest.mark.parametrize(
    "overrides",
    [
        ["hparams_search=mtt_optuna", "experiment=mtt_cifar10_ipc10"],
        ["hparams_search=mtt_optuna", "experiment=mtt_cifar100_ipc50"],
        ["hparams_search=idm_optuna", "experiment=idm_cifar10_ipc10"],
        ["hparams_search=dm_optuna"],
    ],
)
def test_a_search_space_names_real_keys_and_parses(overrides: list[str]) -> None:
    cfg = compose_or_explain("run", overrides)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.data.val_fraction > 0
    parser = OverridesParser.create()
    spaces = {}
    for key, space in cfg.hydra.sweeper.params.items():
        group, name = key.split(".")
        assert name in cfg[group], key  # a misspelt key would never be applied
        (override,) = parser.parse_overrides([f"{key}={space}"])
        spaces[name] = create_optuna_distribution_from_override(override)
        low = getattr(spaces[name], "low", None)
        assert low is None or low > 0, key  # rates and counts are positive
    if cfg.matching.name == "mtt":  # a student's target epoch must lie in the buffer
        last = spaces["max_start_epoch"].high + max(spaces["expert_epochs"].choices)
        assert last <= cfg.experts.epochs


def test_an_unknown_search_or_preset_fails_in_one_line(tmp_path, cli) -> None:
    for override, words in (
        ("hparams_search=optuna", ("unknown hparams_search 'optuna'", "mtt_optuna")),
        ("debug=fast", ("unknown debug 'fast'", "fdr")),
        ("callbacks=early", ("unknown callbacks 'early'", "rich_progress")),
    ):
        assert_one_line_error(cli("rdd.run", override, cwd=tmp_path), *words)
    assert not (tmp_path / "logs").exists()
