"""--help lists the config groups with their YAML options, not the schemas behind them."""

from __future__ import annotations

import pytest

from rdd.cli import group_options


def test_run_help_lists_the_options_and_no_schema(tmp_path, cli) -> None:
    result = cli("rdd.run", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "_schema" not in result.stdout  # Hydra's own list has data_schema, dc_schema, ...
    groups = result.stdout.split("== Config groups (group=option) ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if line and line[0] != " "}
    assert {"data", "matching", "risk", "callbacks", "debug", "hparams_search"} <= listed
    assert "budget" not in listed  # chosen by the data, not by the user
    assert f"matching: {', '.join(group_options('matching'))} (default: dc)" in groups
    assert "debug: default, fdr (optional)" in groups
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(("module", "absent"), [("rdd.evaluate", "matching"), ("rdd.buffer", "")])
def test_every_entry_point_lists_its_own_groups(module, absent, tmp_path, cli) -> None:
    result = cli(module, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "_schema" not in result.stdout
    assert f"python -m {module}:" in result.stdout and "eval: cross_arch, default" in result.stdout
    if absent:
        assert f"\n{absent}:" not in result.stdout
