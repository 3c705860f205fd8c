"""benchmarks/subgroup_shift/coverage.py: represented images against the worst-group gain."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "coverage.py"
spec = importlib.util.spec_from_file_location("coverage_script", SCRIPT)
coverage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(coverage)


def make_run(folder: Path, represented: float, worst: float) -> None:
    (folder / "csv").mkdir(parents=True)
    header = "iteration,alloc/represented_images,alloc/rare_images\n"
    (folder / "csv" / "metrics.csv").write_text(header + f"0,{represented},0.1\n1,,\n")
    scores = {"headline_net": "convnet", "convnet/worst_group_acc": worst}
    (folder / "metrics.json").write_text(json.dumps(scores))


def test_runs_pair_with_their_seeds_none_and_correlate(tmp_path, monkeypatch, capsys) -> None:
    runs = tmp_path / "grayscale"
    made = {"idm_discovered_s0_x": (0.5, 31.0), "idm_discovered_s1_x": (0.9, 33.0)}
    made |= {"idm_known_s2_x": (1.0, 35.0), "dm_discovered_s0_x": (1.0, 50.0)}
    for name, (represented, worst) in made.items():
        make_run(runs / name, represented, worst)
    (runs / "idm_none_s0").mkdir()  # a none run: never an arm
    base = [
        {"transform": "grayscale", "method": "idm", "risk": "none", "design": "owned", "seed": s}
        | {"worst_group_acc": w}
        for s, w in ((0, 30.0), (1, 30.0), (2, 31.0))
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(base))
    monkeypatch.setattr(sys, "argv", ["coverage.py", str(runs), "--results", str(results)])
    coverage.main()
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.startswith("idm_")]
    assert lines == [
        ["idm_discovered_s0_x", "0.5", "0.1", "+1.00"],
        ["idm_discovered_s1_x", "0.9", "0.1", "+3.00"],
        ["idm_known_s2_x", "1.0", "0.1", "+4.00"],
    ]
    r = statistics.correlation([0.5, 0.9, 1.0], [1.0, 3.0, 4.0])
    assert f"= {r:.2f} over 3 runs" in out
