"""rdd.report on a hand-built multirun with known numbers, on W&B offline, and on a real sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from rdd.report import (
    aggregate,
    find_runs,
    headline_details,
    markdown_table,
    mixed_settings,
    plot_accuracy_vs_ipc,
)
from tests.config.test_cli import assert_one_line_error
from tests.conftest import TINY, run_module

# (folder, method, ipc, risk, seed, test_acc, its std over nets); figures below derive from it.
SPECS = [
    ("a/0", "dsa", 10, "none", 0, 50.0, 1.0),
    ("a/1", "dsa", 10, "none", 1, 52.0, 1.5),
    ("a/2", "dsa", 10, "none", 2, 54.0, 0.5),
    ("a/3", "dsa", 10, "cvar", 0, 51.0, 2.0),
    ("a/4", "dsa", 10, "cvar", 1, 55.0, 1.0),
    ("b/0", "dsa", 1, "none", 0, 30.0, 2.5),
    ("b/1", "random", 10, "none", 0, 40.0, 3.0),  # an old run: no cluster or shift figures
    ("b/2", "full", 10, "none", 0, 90.0, 0.2),
]
CLUSTERS = 3
HEADER = [
    "dataset",
    "method",
    "ipc",
    "risk",
    "seeds",
    "clean",
    "mean cluster",
    "worst cluster",
    "worst class",
    "noise",
    "corruptions",
]


def figures_of(method: str, acc: float, std: float) -> dict[str, float]:
    """metrics.json figures (without arch prefix) of a run whose clean accuracy is ``acc``."""
    figures = {"test_acc": acc, "val_acc": acc + 1, "worst_class_acc": acc - 20}
    if method != "random":
        figures |= {"mean_cluster_acc": acc - 1, "worst_cluster_acc": acc - 10}
    if method == "dsa":
        figures |= {"noise_acc": acc - 5, "corruption_acc": acc - 7}
        for name, shift in (("gaussian_noise", 0), ("contrast", 2)):
            for severity in (1, 2):
                figures[f"corruption_{name}_s{severity}_acc"] = acc - 6 - shift - severity
    stds = {f"{key}_std": std + i / 10 for i, key in enumerate(figures)}
    return figures | stds


def write_run(path: Path, spec: tuple, complete: bool = True) -> None:
    _, method, ipc, risk, seed, acc, std = spec
    path.mkdir(parents=True)
    archs = ["convnet", "mlp"] if (method, ipc, risk) == ("dsa", 10, "none") else ["convnet"]
    config = {
        "data": {"name": "digits"},
        "matching": {"name": method},
        "ipc": ipc,
        "risk": {"name": risk},
        "seed": seed,
        "eval": {"nets": archs if len(archs) > 1 else None},
    }
    OmegaConf.save(config, path / "config.yaml")
    (path / ".hydra").mkdir()
    OmegaConf.save(config, path / ".hydra" / "config.yaml")  # Hydra's copy: not a run of its own
    if not complete:
        return
    metrics = figures_of(method, acc, std) | {"distill_seconds": 3.0, "eval_seconds": 2.0}
    for i, arch in enumerate(archs):  # the second architecture scores 10 points lower
        prefixed = figures_of(method, acc, std).items()
        metrics |= {f"{arch}/{k}": v - (0 if "std" in k else 10 * i) for k, v in prefixed}
    (path / "metrics.json").write_text(json.dumps(metrics))
    if method == "dsa" and ipc == 10:
        details = {"archs": {a: {"cluster_acc": cluster_acc(spec)} for a in archs}}
        (path / "eval_details.json").write_text(json.dumps(details))
    Image.new("RGB", (20, 20), (seed * 60, 100, 200)).save(path / "synset.png")


def cluster_acc(spec: tuple) -> list[list[float]]:
    """Two networks x CLUSTERS clusters, a robust run a little better on the last cluster."""
    acc = spec[5]
    bonus = 5.0 if spec[3] != "none" else 0.0
    return [[acc + c - 1 + (bonus if c == CLUSTERS - 1 else 0) for c in range(CLUSTERS)]] * 2


def build_sweep(root: Path) -> Path:
    """A directory of two multiruns with the runs of SPECS and one unfinished run."""
    for spec in SPECS:
        write_run(root / spec[0], spec)
    write_run(root / "b" / "3", ("b/3", "dsa", 50, "none", 0, 0.0, 0.0), complete=False)
    (root / "a" / "multirun.yaml").write_text("hydra: {}\n")
    return root


def expected_cell(specs: list[tuple], key: str) -> str:
    """mean ± std computed here, independently of rdd.report."""
    per_run = [figures_of(s[1], s[5], s[6]) for s in specs]
    if key not in per_run[0]:
        return "–"
    values = np.array([f[key] for f in per_run])
    std = values.std(ddof=0) if len(values) > 1 else per_run[0][f"{key}_std"]
    return f"{values.mean():.2f} ± {std:.2f}"


def expected_table() -> list[list[str]]:
    groups = {
        "dsa 1 none": [SPECS[5]],
        "dsa 10 none": SPECS[0:3],
        "dsa 10 cvar": SPECS[3:5],
        "full all none": [SPECS[7]],
        "random 10 none": [SPECS[6]],
    }
    keys = ["test_acc", "mean_cluster_acc", "worst_cluster_acc", "worst_class_acc"]
    keys += ["noise_acc", "corruption_acc"]
    return [
        ["digits", *label.split(), str(len(specs))] + [expected_cell(specs, k) for k in keys]
        for label, specs in groups.items()
    ]


def tables(markdown: str) -> list[list[list[str]]]:
    """Every markdown table in the text as rows of stripped cells (separator lines dropped)."""
    found, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|- "):
                current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            found.append(current)
            current = []
    return found


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory):
    """The hand-built sweep and one `python -m rdd.report` over it."""
    tmp = tmp_path_factory.mktemp("report")
    sweep = build_sweep(tmp / "sweep")
    result = run_module("rdd.report", str(sweep), cwd=tmp)  # the real command, once
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result


def test_table_is_the_mean_and_std_over_seeds(reported) -> None:
    sweep, result = reported
    markdown = (sweep / "report" / "report.md").read_text()
    main = tables(markdown)[0]
    assert main[0] == HEADER  # blur and invert: no run has them
    assert main[1:] == expected_table()
    assert "52.00 ± 1.63" in main[2]  # seeds 0, 1, 2 of dsa/none: 50, 52, 54
    assert "30.00 ± 2.50" in main[1]  # one run: its own std over networks
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len({len(line) for line in table_lines[: len(main) + 1]}) == 1  # padded columns
    assert table_lines[0] in result.stdout and str(sweep / "report" / "report.md") in result.stdout
    assert "skipped 1 unfinished" in result.stdout
    assert "note:" not in result.stdout  # the seeds of a group share every other setting
    # Rows of 2-3 seeds and rows of one: the line under every table says which std is which.
    note = (
        "± is the std over seeds (over evaluation networks where there is one seed); "
        "the seeds column counts distinct seeds (and runs, where they differ)."
    )
    assert note in result.stdout and markdown.count(f"\n\n{note}\n") == 3


def test_architecture_and_severity_tables(reported) -> None:
    sweep, _ = reported
    _, archs, severity = tables((sweep / "report" / "report.md").read_text())
    assert archs[0] == [*HEADER[:5], "convnet", "mlp"]
    dsa = archs[2]
    assert dsa[5] == "52.00 ± 1.63" and dsa[6] == "42.00 ± 1.63"
    assert archs[1][6] == "–"  # dsa ipc 1 was evaluated with one architecture
    assert severity[0] == [*HEADER[:5], "s1", "s2"]
    assert [row[1] for row in severity[1:]] == ["dsa"] * 3  # only dsa has corruption figures
    for level in (1, 2):  # per run: mean over gaussian_noise (acc-6-s) and contrast (acc-8-s)
        values = np.array([s[5] - 7 - level for s in SPECS[0:3]])
        assert severity[2][4 + level] == f"{values.mean():.2f} ± {values.std():.2f}"


def test_report_json_holds_the_same_numbers(reported) -> None:
    sweep, _ = reported
    data = json.loads((sweep / "report" / "report.json").read_text())
    row = next(r for r in data["rows"] if (r["method"], r["ipc"], r["risk"]) == ("dsa", 10, "none"))
    assert row["n"] == row["seeds"] == 3
    assert row["figures"]["test_acc"]["mean"] == pytest.approx(52.0)
    assert row["figures"]["test_acc"]["std"] == pytest.approx(np.std([50, 52, 54]))
    full = next(r for r in data["rows"] if r["method"] == "full")
    assert full["ipc"] is None
    assert len(data["unfinished"]) == 1


def test_plots_are_written(reported) -> None:
    out = reported[0] / "report"
    names = ["acc_vs_ipc", "clusters_digits_dsa_ipc10", "grids_digits_ipc1", "grids_digits_ipc10"]
    for name in names:
        with Image.open(out / f"{name}.png") as image:
            assert image.width > 100 and image.height > 100, name
    assert sorted(p.stem for p in out.glob("*.png")) == names
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_api_used_by_the_notebook(tmp_path) -> None:
    runs = find_runs([build_sweep(tmp_path / "sweep")])
    assert len(runs) == len(SPECS)
    dsa = next(r for r in runs if r.key == ("digits", "dsa", 10, "cvar"))
    assert dsa.details is not None and dsa.seed == 0
    rows = aggregate(runs)
    assert [row.n for row in rows] == [1, 3, 2, 1, 1]
    assert rows[3].labels()[:4] == ["digits", "full", "all", "none"]
    assert "| clean" in markdown_table(rows)


def test_a_group_mixing_settings_is_pointed_out(tmp_path, cli) -> None:
    sweep = build_sweep(tmp_path / "sweep")
    config = OmegaConf.load(sweep / "a" / "1" / "config.yaml")
    config.eval.epochs = 300  # one seed trained its evaluation networks longer
    OmegaConf.save(config, sweep / "a" / "1" / "config.yaml")
    [row] = [row for row in aggregate(find_runs([sweep])) if row.n == 3]
    assert mixed_settings(row.runs) == ["eval.epochs"]
    result = cli("rdd.report", str(sweep), cwd=tmp_path)
    assert "note: digits/dsa/10/none mixes runs that differ in eval.epochs" in result.stdout
    assert "digits/dsa/10/none mixes" in (sweep / "report" / "report.md").read_text()


def test_regenerating_replaces_only_the_reports_files(tmp_path, cli) -> None:
    sweep = build_sweep(tmp_path / "sweep")
    out = tmp_path / "out"
    assert cli("rdd.report", str(sweep), f"out={out}", cwd=tmp_path).returncode == 0
    (out / "notes.txt").write_text("mine")
    for spec in SPECS[3:5]:  # without the robust runs there is no base-vs-robust plot
        (sweep / spec[0] / "metrics.json").unlink()
    again = cli("rdd.report", str(sweep), f"out={out}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "clusters_digits_dsa_ipc10.png").exists()
    assert "cvar" not in (out / "report.md").read_text()


def test_seeds_are_counted_once_and_interrupted_evaluations_are_left_out(tmp_path, cli) -> None:
    """Two search trials of seed 0 are one seed (their ± is over runs); an interrupted
    evaluation is skipped, and eval_complete is no figure."""
    sweep = tmp_path / "sweep"
    for folder, seed, acc in (("0", 0, 50.0), ("1", 0, 54.0), ("2", 1, 52.0)):
        write_run(sweep / folder, ("", "dm", 10, "none", seed, acc, 1.0))
    stopped = sweep / "3"
    write_run(stopped, ("", "dm", 10, "none", 2, 10.0, 1.0))
    for folder, complete in (("0", True), ("1", True), ("2", True), ("3", False)):
        metrics = json.loads((sweep / folder / "metrics.json").read_text())
        (sweep / folder / "metrics.json").write_text(
            json.dumps(metrics | {"eval_complete": complete})
        )
    pair = aggregate(find_runs([sweep / "0", sweep / "1"]))[0]
    assert (pair.n, pair.seeds, pair.labels()[4]) == (2, 1, "1 (2 runs)")
    result = cli("rdd.report", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "found 3 runs in 1 group; skipped 1 unfinished run" in result.stdout
    [row] = json.loads((sweep / "report" / "report.json").read_text())["rows"]
    assert (row["n"], row["seeds"]) == (3, 2) and str(stopped) not in row["runs"]
    assert "eval_complete" not in row["figures"]
    assert row["figures"]["test_acc"]["mean"] == pytest.approx(52.0)  # 50, 54, 52; not 10
    [main] = tables((sweep / "report" / "report.md").read_text())[:1]
    assert main[1][4] == "2 (3 runs)"
    note = "± is the std over runs, some sharing a seed; the seeds column counts distinct seeds"
    assert note in result.stdout


def test_an_imported_set_of_unequal_classes_is_a_row_of_its_own(tmp_path) -> None:
    """rdd.evaluate records such a set's ipc as "mixed": a row, no point on the IPC axis."""
    write_run(tmp_path / "run", ("", "dm", 10, "none", 0, 50.0, 1.0))
    write_run(tmp_path / "imported", ("", "dm", "mixed", "none", 0, 40.0, 1.0))
    config = OmegaConf.load(tmp_path / "imported" / "config.yaml")
    config.imported = {"format": "vico"}
    OmegaConf.save(config, tmp_path / "imported" / "config.yaml")
    rows = aggregate(find_runs([tmp_path]))
    assert [row.labels()[1:3] for row in rows] == [["dm", "10"], ["dm (imported)", "mixed"]]
    [ax] = plot_accuracy_vs_ipc(rows).axes
    assert [c.get_label() for c in ax.containers] == ["dm"]


def test_an_evaluation_by_an_older_rdd_says_to_evaluate_again(tmp_path, cli) -> None:
    old = tmp_path / "old_eval"
    write_run(old, SPECS[0])
    (old / "config.yaml").unlink()  # rdd.evaluate wrote none before
    (old / "synset_source.json").write_text('{"synset": "set.pt"}')
    result = cli("rdd.report", str(old), cwd=tmp_path)
    assert_one_line_error(result, "older rdd.evaluate", "evaluate the set again")


def test_out_never_overwrites_what_the_report_did_not_write(tmp_path, cli) -> None:
    sweep = build_sweep(tmp_path / "sweep")
    taken = tmp_path / "notes.md"
    taken.write_text("mine")
    mine = tmp_path / "docs"
    mine.mkdir()
    (mine / "report.md").write_text("my own report")
    for out, words in (
        (taken, ("is not a folder", "is a file", "pass out=")),
        (taken / "sub", ("is not a folder", "pass out=")),
        (mine, ("was not written by rdd.report", "pass out=")),
    ):
        assert_one_line_error(cli("rdd.report", str(sweep), f"out={out}", cwd=tmp_path), *words)
    assert taken.read_text() == "mine" and (mine / "report.md").read_text() == "my own report"
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]
    assert not (sweep / "report").exists()  # refused before any work


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nowhere"], ("nowhere", "does not exist")),
        (["empty"], ("no finished runs", "empty")),
        (["sweep", "colour=red"], ("unknown config key 'colour'",)),
        (["sweep", "--colour"], ("unknown option '--colour'",)),
        (["sweep", "logger=tensorboard"], ("unknown logger",)),
        (["sweep", "logger=csv"], ("wandb or logger=none",)),
        (["sweep", "logger=wandb", "logger.wandb.offline=maybe"], ("logger.wandb.offline",)),
        (["sweep", "runs=sweep"], ("either as runs=", "not both")),
        ([], ("no run directory",)),
    ],
)
def test_bad_input_fails_in_one_line(
    args: list[str], words: tuple[str, ...], tmp_path, cli
) -> None:
    (tmp_path / "empty" / "0").mkdir(parents=True)
    (tmp_path / "sweep").mkdir()
    write_run(tmp_path / "sweep" / "0", SPECS[0])
    assert_one_line_error(cli("rdd.report", *args, cwd=tmp_path), *words)


def test_report_of_a_real_multirun(tmp_path, cli) -> None:
    sweep = tmp_path / "sweep"
    made = run_module(
        "rdd.run",
        "-m",
        "seed=0,1",
        *TINY,
        "matching=random",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    # The sweep wrote its table as it ended (rdd.report.sweep.WriteSweepTable): no plots.
    assert f"sweep table: {sweep / 'report' / 'report.md'}" in made.stdout
    [written] = tables((sweep / "report" / "report.md").read_text())[:1]
    assert written[1][:5] == ["digits", "random", "2", "none", "2"]
    assert not list((sweep / "report").glob("*.png"))
    result = cli("rdd.report", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "found 2 runs in 1 group" in result.stdout and "note:" not in result.stdout
    [main] = tables((sweep / "report" / "report.md").read_text())[:1]
    assert len(main) == 2 and main[1][:5] == ["digits", "random", "2", "none", "2"]
    assert (sweep / "report" / "grids_digits_ipc2.png").is_file()
    for run in find_runs([sweep]):  # eval.nets: null: the headline net is the run's own
        assert len(headline_details(run)["cluster_acc"][0]) == run.config.eval.partition.k
