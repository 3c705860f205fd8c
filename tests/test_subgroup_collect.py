"""benchmarks/subgroup_shift/collect.py: rows read from run folders, merged into results.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "collect.py"
spec = importlib.util.spec_from_file_location("subgroup_collect", SCRIPT)
collect = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect)


def write_run(
    folder: Path, risk: str, seed: int, test_acc: float, worst: float, clustering: str = "known"
) -> None:
    """A finished run folder as rdd.run leaves it: config.yaml and metrics.json."""
    folder.mkdir(parents=True)
    config = {
        "seed": seed,
        "data": {"subgroup": "blur"},
        "matching": {"name": "dm"},
        "risk": {"name": risk},
        "clustering": {"name": clustering},
        "robust": {"allocation": {"shared": True}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "test_acc": test_acc,
        "worst_group_acc": worst,
        "worst_cluster_acc": worst,
        "group_blur_acc": worst,
        "distill_seconds": 1.0,
        "eval_seconds": 2.0,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if risk != "none":  # the allocation is logged from iteration 0 on
        (folder / "csv").mkdir()
        (folder / "csv" / "metrics.csv").write_text(
            "iteration,train/match_loss,alloc/rare_images,alloc/shared_images\n"
            "0,1.0,0.4,9.5\n1,0.9,0.5,9.4\n"
        )


def earlier_row(risk: str, seed: int, test_acc: float, groups: str) -> dict:
    return {
        "design": "owned",
        "transform": "blur",
        "method": "dm",
        "risk": risk,
        "groups": groups,
        "seed": seed,
        "test_acc": test_acc,
        "worst_group_acc": 20.0,
    }


def test_rows_read_the_arm_and_its_tag_from_the_folder_and_config(tmp_path):
    write_run(tmp_path / "blur" / "dm_known_s1_shared", "cvar", 1, 35.0, 30.0)
    (row,) = collect.rows(tmp_path)
    assert (row["risk"], row["groups"], row["seed"], row["allocation"]) == (
        "cvar_shared",
        "known",
        1,
        "shared",
    )
    assert (row["test_acc"], row["worst_group_acc"], row["altered_acc"]) == (35.0, 30.0, 30.0)
    assert (row["shared_images"], row["rare_images"]) == (9.5, 0.4)  # the first logged


def test_a_run_without_an_allocation_has_no_counts(tmp_path):
    write_run(tmp_path / "dm_none_s0", "none", 0, 36.0, 28.0)
    (row,) = collect.rows(tmp_path)
    assert "shared_images" not in row and "rare_images" not in row


def test_a_new_run_replaces_only_the_row_of_its_own_arm_and_seed(tmp_path):
    results = tmp_path / "out" / "results.json"
    results.parent.mkdir()
    kept_seed = earlier_row("cvar_shared", 0, 34.0, "known")
    replaced = earlier_row("cvar_shared", 1, 33.0, "known")
    other_arm = earlier_row("none", 1, 36.0, "-")
    class_wide = {"transform": "blur", "method": "dm", "risk": "cvar", "seed": 1}  # issue 13
    results.write_text(json.dumps([kept_seed, replaced, other_arm, class_wide]))
    write_run(tmp_path / "runs" / "blur" / "dm_known_s1_shared", "cvar", 1, 35.0, 30.0)

    found = collect.merged(collect.earlier_rows(results), collect.rows(tmp_path / "runs"))

    ones = [r for r in found if (r.get("risk"), r.get("seed")) == ("cvar_shared", 1)]
    assert [r["test_acc"] for r in ones] == [35.0]  # measured again: the new figure only
    assert kept_seed in found and other_arm in found
    assert {"design": "class-wide"} | class_wide in found
    assert len(found) == 4


def test_the_table_pairs_a_merged_arm_with_the_kept_base_by_seed(tmp_path):
    earlier = [earlier_row("none", 1, 36.0, "-") | {"worst_group_acc": 28.0}]
    write_run(tmp_path / "blur" / "dm_known_s1_shared", "cvar", 1, 35.0, 30.0)
    for row in earlier:
        row |= {"worst_cluster_acc": 27.0, "altered_acc": 28.0}

    table = collect.table(collect.merged(earlier, collect.rows(tmp_path)))

    line = next(r for r in table.splitlines() if "cvar_shared" in r)
    assert line.endswith("| -1.00 | +2.00 |")  # 35 - 36 clean, 30 - 28 worst group


def test_an_arm_with_a_none_of_its_own_tag_is_paired_with_that_one(tmp_path):
    """TAG=_rng ARMS="none discovered": both arms at one commit pair with each other; the
    tagged none pairs with the untagged one; an arm whose tag has no none keeps the untagged."""
    earlier = [earlier_row("none", 0, 36.0, "-") | {"worst_group_acc": 28.0}]
    for row in earlier:
        row |= {"worst_cluster_acc": 27.0, "altered_acc": 28.0}
    write_run(tmp_path / "blur" / "dm_none_s0_rng", "none", 0, 37.0, 29.0)
    write_run(tmp_path / "blur" / "dm_known_s0_rng", "cvar", 0, 36.5, 31.0)
    write_run(tmp_path / "blur" / "dm_known_s0_shared", "cvar", 0, 35.0, 30.0)

    lines = collect.table(collect.merged(earlier, collect.rows(tmp_path))).splitlines()

    def line(risk):
        return next(r for r in lines if f"| {risk} |" in r)

    assert line("cvar_rng").endswith("| -0.50 | +2.00 |")  # against none_rng: 37, 29
    assert line("none_rng").endswith("| +1.00 | +1.00 |")  # against none: 36, 28
    assert line("cvar_shared").endswith("| -1.00 | +2.00 |")  # no none_shared: against none


def test_bases_pair_an_arm_with_the_first_named_none_its_method_has(tmp_path):
    """--base _step0=_g6,_represent: an arm whose none ran under another tag pairs with the
    first of those tags that has a none; with none of them, the untagged none."""
    earlier = [earlier_row("none", 0, 36.0, "-") | {"worst_group_acc": 28.0}]
    for row in earlier:
        row |= {"worst_cluster_acc": 27.0, "altered_acc": 28.0}
    write_run(tmp_path / "blur" / "dm_none_s0_represent", "none", 0, 37.0, 29.0)
    write_run(tmp_path / "blur" / "dm_known_s0_step0", "cvar", 0, 36.5, 31.0)
    found = collect.merged(earlier, collect.rows(tmp_path))

    def line(bases):
        lines = collect.table(found, bases).splitlines()
        return next(r for r in lines if "| cvar_step0 |" in r)

    assert line({"_step0": "_g6,_represent"}).endswith("| -0.50 | +2.00 |")  # 37, 29
    assert line({"_step0": "_g6"}).endswith("| +0.50 | +3.00 |")  # no none_g6: 36, 28
    assert line({}).endswith("| +0.50 | +3.00 |")


def test_groups_name_the_rare_pick_only_where_it_is_not_the_smallest() -> None:
    from omegaconf import OmegaConf

    def config(**clustering):
        node = {"name": "faiss_kmeans", "features": "style_error", "k": 5, **clustering}
        return OmegaConf.create({"risk": {"name": "cvar"}, "clustering": node})

    assert collect.groups_of(config()) == "faiss_kmeans:style_error:k5"  # rows before the key
    assert collect.groups_of(config(rare_pick="smallest")) == "faiss_kmeans:style_error:k5"
    assert collect.groups_of(config(rare_pick="apart")) == "faiss_kmeans:style_error:k5:apart"
