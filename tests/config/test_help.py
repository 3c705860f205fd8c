"""--help lists the config groups with their YAML options, not the schemas behind them."""

from __future__ import annotations

from rdd.config.cli import group_options


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


def test_evaluate_help_lists_its_own_groups(tmp_path, cli) -> None:
    result = cli("rdd.evaluate", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "_schema" not in result.stdout
    assert (
        "python -m rdd.evaluate:" in result.stdout and "eval: cross_arch, default" in result.stdout
    )
    assert "\nmatching:" not in result.stdout


def test_buffer_help_lists_only_what_the_buffer_reads(tmp_path, cli) -> None:
    """No evaluation, logger, callbacks, search or debug group; MTT the only matching (and
    the only experiment overlays), required since rdd.run's default (dc) is refused."""
    result = cli("rdd.buffer", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "_schema" not in result.stdout
    groups = result.stdout.split("== Config groups (group=option) ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if line and line[0] != " "}
    assert listed == {"net", "data", "matching", "clustering", "risk", "robust", "experts"} | {
        "trainer",
        "paths",
        "experiment",
    }
    assert "\nmatching: mtt (required)\n" in groups
    experiments = [o for o in group_options("experiment") if o.startswith("mtt_")]
    assert " ".join(f"experiment: {', '.join(experiments)} (optional)".split()) in " ".join(
        groups.split()
    )
