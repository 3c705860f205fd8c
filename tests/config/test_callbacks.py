"""The callbacks group (conf/callbacks): Lightning callbacks of the distillation Trainer."""

from __future__ import annotations

import csv

import pytest
from lightning.pytorch.callbacks import RichProgressBar, Timer

from rdd.config.callbacks import build_callbacks
from rdd.config.errors import UserError
from rdd.outputs.iteration_bar import IterationBar
from tests.conftest import compose_config


@pytest.mark.parametrize(
    ("overrides", "types"),
    [
        ([], [IterationBar, Timer]),
        (["callbacks=none"], []),
        (["callbacks=rich_progress"], [RichProgressBar, Timer]),
        (["trainer.enable_progress_bar=false"], [Timer]),  # Lightning refuses a bar then
        (["callbacks.timer=null"], [IterationBar]),
    ],
)
def test_callbacks_are_built_from_the_group(overrides, types) -> None:
    assert [type(c) for c in build_callbacks(compose_config(*overrides))] == types


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("callbacks.timer.duration=two_hours", ("invalid callbacks.timer", "DD:HH:MM:SS")),
        ("+callbacks.x._target_=collections.OrderedDict", ("callbacks.x", "not a Lightning")),
        ("+callbacks.y=3", ("callbacks.y", "_target_")),
    ],
)
def test_a_bad_callback_is_a_one_line_user_error(override, words) -> None:
    with pytest.raises(UserError) as err:
        build_callbacks(compose_config(override))
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


def test_the_timer_stops_the_distillation_and_the_run_goes_on(tmp_path, cli) -> None:
    out = tmp_path / "run"
    args = ["debug=fdr", "matching=dm", "matching.iterations=500", "logger=csv"]
    args += ["callbacks.timer.duration=00:00:00:02", "print_config=false", f"hydra.run.dir={out}"]
    result = cli("rdd.run", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out / "csv" / "metrics.csv") as f:
        steps = {row["iteration"] for row in csv.DictReader(f) if row.get("train/match_loss")}
    # 500 DM iterations take minutes here (~0.3 s each); the timer stops them after 2 s.
    assert 1 <= len(steps) < 100, len(steps)
    assert (out / "metrics.json").is_file()  # and evaluated what it had
