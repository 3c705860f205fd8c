"""Issue 24's target judged from results.json and ceiling.json, under each reading of it.

    .venv/bin/python benchmarks/subgroup_shift/verdict.py > benchmarks/subgroup_shift/verdict.txt

The target: with the default discovered groups, worst-group accuracy +2 points over the same
base method at <= 0.5 point clean cost, for at least two methods on at least two of the three
transforms; a transform where the ceiling shows +2 out of reach is judged by the share of the
ceiling's worst-group gain reached instead (target: half). Three readings of it:

- ``strict``: +2 worst group at <= 0.5 clean on every transform.
- ``ceiling``: the issue's words. Every transform's real-image ceiling (``ceiling.json``, one
  rare image per class against none) misses +2 at <= 0.5 clean, so each is judged by half the
  ceiling's worst-group gain (nothing, where it gains nothing), at no more clean cost than the
  ceiling's own (or 0.5 if that is less).
- ``oracle``: the same, with the ceiling's gain the larger of the real-image ceiling's and the
  method's own oracle's (the known groups at the defaults), so a transform where distillation
  with the true groups does gain is not judged against "half of nothing"; the clean bound is
  that ceiling's clean cost (or 0.5). Where the oracle sets the bar, the discovered arm is
  judged on the seeds the oracle ran (a share of its gain, seed for seed). Where the oracle
  was not run at the defaults the real-image ceiling stands alone (marked ``-`` in the oracle
  column).

The issue does not say what clean cost a fallback allows; ``--any-clean-cost`` drops the bound
(how sections 1-19 of the README judged invert's fallback).

The arms at the defaults are the rows of the tags ``DEFAULT_TAGS`` (the same config; ``_avx2``
ran on a second machine), each paired by seed with the ``none`` of its own tag, or the one
``collect.py`` pairs it with.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("subgroup_collect", HERE / "collect.py")
collect = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(collect)

DEFAULT_TAGS = ("_serr", "_avx2")  # section 16's defaults; section 19's second machine
DISCOVERED = "faiss_kmeans:style_error:k5"
KNOWN = "known"
TRANSFORMS = ("grayscale", "invert", "blur")
TARGET_GAIN, TARGET_COST, SHARE = 2.0, 0.5, 0.5
READINGS = ("strict", "ceiling", "oracle")


class Paired(NamedTuple):
    """Mean paired changes (points) over ``seeds``; ``stderr`` of the worst group's."""

    clean: float
    worst: float
    stderr: float
    seeds: tuple[int, ...]


def paired(
    rows: list[dict], transform: str, method: str, groups: str, only: tuple[int, ...] = ()
) -> Paired | None:
    """The default arm with ``groups`` against ``none``, by seed, over every default tag (or
    over the seeds ``only`` names)."""
    mine = [r for r in rows if (r.get("transform"), r["method"]) == (transform, method)]
    mine = [r for r in mine if r.get("design") == "owned"]
    bases = dict(item.split("=", 1) for item in collect.BASES)
    clean, worst, seeds = [], [], []
    for tag in DEFAULT_TAGS:
        arm = [r for r in mine if r["risk"] == f"cvar{tag}" and r["groups"] == groups]
        base = {r["seed"]: r for r in collect.base_of(mine, f"cvar{tag}", tag, bases)}
        for row in sorted(arm, key=lambda r: r["seed"]):
            seed = row["seed"]
            if seed in base and seed not in seeds and (not only or seed in only):
                seeds.append(seed)
                clean.append(row["test_acc"] - base[seed]["test_acc"])
                worst.append(row["worst_group_acc"] - base[seed]["worst_group_acc"])
    return summary(clean, worst, seeds) if seeds else None


def summary(clean: list[float], worst: list[float], seeds: list[int]) -> Paired:
    spread = statistics.stdev(worst) / math.sqrt(len(worst)) if len(worst) > 1 else math.nan
    return Paired(statistics.mean(clean), statistics.mean(worst), spread, tuple(seeds))


def real_ceiling(ceiling_rows: list[dict], transform: str) -> Paired:
    """One rare image per class against none in the real-image ceiling, paired by seed."""
    by = {(r["rare_per_class"], r["seed"]): r for r in ceiling_rows if r["transform"] == transform}
    seeds = sorted(s for r, s in by if r == 1 and (0, s) in by)
    clean = [by[1, s]["test_acc"] - by[0, s]["test_acc"] for s in seeds]
    worst = [by[1, s]["worst_group_acc"] - by[0, s]["worst_group_acc"] for s in seeds]
    return summary(clean, worst, seeds)


def bar(
    reading: str, ceiling: Paired, oracle: Paired | None, cost_bound: bool = True
) -> tuple[float, float]:
    """(the worst-group gain to reach, the clean cost allowed) under ``reading``; without
    ``cost_bound`` a fallback allows any clean cost (as sections 1-19 judged the fallback)."""
    if reading == "strict" or reaches_target(ceiling):
        return TARGET_GAIN, TARGET_COST
    best = oracle if oracle_sets_bar(reading, ceiling, oracle) else ceiling
    cost = max(TARGET_COST, -best.clean) if cost_bound else math.inf
    return SHARE * max(best.worst, 0.0), cost


def oracle_sets_bar(reading: str, ceiling: Paired, oracle: Paired | None) -> bool:
    return reading == "oracle" and oracle is not None and oracle.worst > ceiling.worst


def reaches_target(result: Paired) -> bool:
    return result.worst >= TARGET_GAIN and result.clean >= -TARGET_COST


def passes(found: Paired, gain: float, cost: float) -> bool:
    return found.worst >= gain and found.clean >= -cost


def judge(rows: list[dict], ceiling_rows: list[dict], cost_bound: bool = True) -> list[dict]:
    """One line per (transform, method) with a discovered arm at the defaults."""
    lines = []
    for transform in TRANSFORMS:
        ceiling = real_ceiling(ceiling_rows, transform)
        for method in sorted({r["method"] for r in rows if r.get("transform") == transform}):
            found = paired(rows, transform, method, DISCOVERED)
            if found is None:
                continue
            oracle = paired(rows, transform, method, KNOWN)
            # the oracle's share is judged on the seeds the oracle ran
            on_oracle_seeds = oracle and paired(rows, transform, method, DISCOVERED, oracle.seeds)
            line = {"transform": transform, "method": method, "found": found}
            line |= {"oracle": oracle, "real": ceiling, "on oracle seeds": on_oracle_seeds}
            line["bars"] = {}
            for reading in READINGS:
                gain, cost = bar(reading, ceiling, oracle, cost_bound)
                judged = on_oracle_seeds if oracle_sets_bar(reading, ceiling, oracle) else found
                ok = judged is not None and passes(judged, gain, cost)
                line["bars"][reading] = (gain, cost, ok)
            lines.append(line)
    return lines


def winners(lines: list[dict], reading: str) -> dict[str, list[str]]:
    """Per method, the transforms it passes under ``reading``."""
    passed: dict[str, list[str]] = {}
    for line in lines:
        if line["bars"][reading][2]:
            passed.setdefault(line["method"], []).append(line["transform"])
    return passed


def met(lines: list[dict], reading: str) -> bool:
    """At least two methods, each passing at least two transforms."""
    return sum(len(t) >= 2 for t in winners(lines, reading).values()) >= 2


def show(result: Paired | None) -> str:
    if result is None:
        return "-"
    return f"{result.clean:+.2f} / {result.worst:+.2f} ({len(result.seeds)})"


def report(lines: list[dict]) -> str:
    out = [
        "Δ clean / Δ worst group (seeds), paired by seed; bar: the worst-group gain to reach"
        " and the clean cost allowed",
        "",
        "| transform | method | discovered | standard error | oracle | discovered on the"
        " oracle's seeds | real-image ceiling | "
        + " | ".join(f"{r}: bar, pass" for r in READINGS)
        + " |",
        "| --- " * (7 + len(READINGS)) + "|",
    ]
    for line in lines:
        cells = [line["transform"], line["method"], show(line["found"])]
        cells += [f"{line['found'].stderr:.2f}", show(line["oracle"])]
        cells += [show(line["on oracle seeds"]), show(line["real"])]
        for reading in READINGS:
            gain, cost, ok = line["bars"][reading]
            bound = "any clean cost" if math.isinf(cost) else f"-{cost:.2f}"
            cells.append(f"+{gain:.2f} at {bound}: {'pass' if ok else 'miss'}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for reading in READINGS:
        passed = winners(lines, reading)
        listed = "; ".join(f"{m}: {', '.join(t)}" for m, t in sorted(passed.items())) or "none"
        verdict = "met" if met(lines, reading) else "missed"
        out.append(f"{reading}: target {verdict} (passes: {listed})")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--ceiling", type=Path, default=HERE / "ceiling.json")
    parser.add_argument(
        "--any-clean-cost",
        action="store_true",
        help="a fallback bar allows any clean cost, not only its ceiling's own",
    )
    args = parser.parse_args()
    rows, ceiling_rows = (json.loads(path.read_text()) for path in (args.results, args.ceiling))
    lines = judge(rows, ceiling_rows, cost_bound=not args.any_clean_cost)
    print(report(lines), end="")


if __name__ == "__main__":
    main()
