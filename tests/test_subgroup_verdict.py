"""benchmarks/subgroup_shift/verdict.py: issue 24's target under its three readings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "verdict.py"
spec = importlib.util.spec_from_file_location("subgroup_verdict", SCRIPT)
verdict = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verdict)

FOUND = verdict.DISCOVERED


def row(method, risk, seed, clean, worst, groups="-", transform="grayscale") -> dict:
    return {
        "design": "owned",
        "transform": transform,
        "method": method,
        "risk": risk,
        "groups": groups,
        "seed": seed,
        "test_acc": clean,
        "worst_group_acc": worst,
    }


def ceiling_rows(transform: str, gains: list[tuple[float, float]]) -> list[dict]:
    """Per seed, r = 0 at 30 / 20 and r = 1 at (30 + clean, 20 + worst)."""
    rows = []
    for seed, (clean, worst) in enumerate(gains):
        for rare, (c, w) in ((0, (30.0, 20.0)), (1, (30.0 + clean, 20.0 + worst))):
            rows.append(
                {"transform": transform, "rare_per_class": rare, "seed": seed}
                | {"test_acc": c, "worst_group_acc": w}
            )
    return rows


def test_each_tag_pairs_with_its_own_none_by_seed() -> None:
    rows = [
        row("idm", "none", 0, 40.0, 30.0),
        row("idm", "none", 1, 41.0, 31.0),
        row("idm", "cvar_serr", 0, 39.0, 33.0, FOUND),
        row("idm", "cvar_serr", 1, 41.0, 32.0, FOUND),
        row("idm", "none", 4, 50.0, 50.0),  # another machine's none: not this seed's pair
        row("idm", "none_avx2", 4, 42.0, 30.0),
        row("idm", "cvar_avx2", 4, 42.5, 30.5, FOUND),
        row("idm", "cvar_floor", 2, 10.0, 90.0, FOUND),  # not the defaults
    ]
    found = verdict.paired(rows, "grayscale", "idm", FOUND)
    # seed 0: -1 / +3; seed 1: 0 / +1; seed 4: +0.5 / +0.5
    assert found.seeds == (0, 1, 4)
    assert found.clean == pytest.approx((-1.0 + 0.0 + 0.5) / 3)
    assert found.worst == pytest.approx((3.0 + 1.0 + 0.5) / 3)
    assert verdict.paired(rows, "grayscale", "idm", verdict.KNOWN) is None


def test_a_seed_without_its_none_is_left_out() -> None:
    rows = [row("dm", "none", 0, 30, 20), row("dm", "cvar_serr", 0, 31, 22, FOUND)]
    rows.append(row("dm", "cvar_serr", 3, 99, 99, FOUND))
    assert verdict.paired(rows, "grayscale", "dm", FOUND).seeds == (0,)


def test_the_real_ceiling_pairs_one_rare_image_against_none() -> None:
    ceiling = verdict.real_ceiling(ceiling_rows("invert", [(-2.0, 3.0), (-1.0, 4.0)]), "invert")
    assert (ceiling.clean, ceiling.worst) == pytest.approx((-1.5, 3.5))


def test_strict_is_always_two_points_at_half_a_point() -> None:
    nothing = verdict.Paired(-0.7, -0.6, 0.1, (0, 1, 2))
    assert verdict.bar("strict", nothing, None) == (2.0, 0.5)


def test_a_ceiling_that_gains_nothing_leaves_a_bar_of_nothing_at_its_clean_cost() -> None:
    nothing = verdict.Paired(-0.73, -0.60, 0.1, (0, 1, 2))
    assert verdict.bar("ceiling", nothing, None) == pytest.approx((0.0, 0.73))
    assert verdict.bar("oracle", nothing, None) == pytest.approx((0.0, 0.73))


def test_the_oracle_reading_takes_the_larger_gain_with_its_clean_cost() -> None:
    nothing = verdict.Paired(-0.2, -0.6, 0.1, (0, 1, 2))
    oracle = verdict.Paired(-0.9, 3.0, 0.3, (0, 1))
    assert verdict.bar("oracle", nothing, oracle) == pytest.approx((1.5, 0.9))
    assert verdict.bar("ceiling", nothing, oracle) == pytest.approx((0.0, 0.5))
    smaller = verdict.Paired(-0.1, -1.0, 0.3, (0, 1))
    assert verdict.bar("oracle", nothing, smaller) == pytest.approx((0.0, 0.5))


def test_a_ceiling_within_the_target_keeps_the_target() -> None:
    reachable = verdict.Paired(-0.3, 2.5, 0.1, (0, 1, 2))
    for reading in verdict.READINGS:
        assert verdict.bar(reading, reachable, None) == (2.0, 0.5)


def grid(gains: dict[tuple[str, str], tuple[float, float]], oracle_grey: float) -> list[dict]:
    """Two seeds per (method, transform): none at 40 / 30, the discovered arm at the gain."""
    rows = []
    for (method, transform), (clean, worst) in gains.items():
        for seed in (0, 1):
            rows.append(row(method, "none", seed, 40.0, 30.0, transform=transform))
            rows.append(row(method, "cvar_serr", seed, 40 + clean, 30 + worst, FOUND, transform))
            if transform == "grayscale":
                rows.append(
                    row(method, "cvar_serr", seed, 40, 30 + oracle_grey, "known", transform)
                )
    return rows


CEILING = ceiling_rows("grayscale", [(-0.7, -0.6)] * 2) + ceiling_rows("invert", [(-1.7, 3.0)] * 2)
CEILING += ceiling_rows("blur", [(-0.4, 0.1)] * 2)


def test_the_target_needs_two_methods_each_on_two_transforms() -> None:
    gains = {
        ("idm", "grayscale"): (-0.3, 1.2),
        ("idm", "invert"): (-0.9, 2.0),
        ("mtt", "grayscale"): (0.0, 1.4),
        ("mtt", "invert"): (-2.4, 3.6),  # over the ceiling's clean cost
        ("dm", "grayscale"): (0.2, 0.6),
    }
    lines = verdict.judge(grid(gains, oracle_grey=2.6), CEILING)
    assert verdict.winners(lines, "strict") == {}
    assert verdict.winners(lines, "ceiling") == {
        "dm": ["grayscale"],
        "idm": ["grayscale", "invert"],
        "mtt": ["grayscale"],
    }
    assert not verdict.met(lines, "ceiling")
    # the oracle gains +2.6 on grayscale: the bar is +1.3, which only mtt's +1.4 clears
    assert verdict.winners(lines, "oracle") == {"idm": ["invert"], "mtt": ["grayscale"]}
    gains["mtt", "invert"] = (-1.0, 3.6)
    lines = verdict.judge(grid(gains, oracle_grey=2.6), CEILING)
    assert verdict.met(lines, "ceiling") and not verdict.met(lines, "oracle")
    assert "ceiling: target met" in verdict.report(lines)
    assert "oracle: target missed" in verdict.report(lines)


def test_without_the_cost_bound_a_fallback_allows_any_clean_cost() -> None:
    ceiling = verdict.Paired(-1.74, 3.04, 0.3, (0, 1, 2))
    assert verdict.bar("strict", ceiling, None, cost_bound=False) == (2.0, 0.5)
    gain, cost = verdict.bar("ceiling", ceiling, None, cost_bound=False)
    assert gain == pytest.approx(1.52) and cost == float("inf")
    gains = {("mtt", "invert"): (-2.4, 3.6), ("mtt", "grayscale"): (0.0, 1.4)}
    lines = verdict.judge(grid(gains, oracle_grey=2.6), CEILING, cost_bound=False)
    assert verdict.winners(lines, "ceiling") == {"mtt": ["grayscale", "invert"]}
    assert "any clean cost" in verdict.report(lines)


def test_the_oracle_reading_judges_the_discovered_arm_on_the_oracles_seeds() -> None:
    rows = [row("mtt", "none", seed, 40.0, 30.0) for seed in (0, 1)]
    rows += [
        row("mtt", "cvar_serr", 0, 40.0, 32.0, FOUND),
        row("mtt", "cvar_serr", 1, 40, 30, FOUND),
    ]
    rows.append(row("mtt", "cvar_serr", 1, 40.0, 31.0, verdict.KNOWN))  # the oracle: seed 1 only
    assert verdict.paired(rows, "grayscale", "mtt", FOUND, (1,)).worst == pytest.approx(0.0)
    (line,) = verdict.judge(rows, CEILING)
    assert line["found"].worst == pytest.approx(1.0)  # over both seeds: over the +0.5 bar
    assert line["on oracle seeds"].seeds == (1,)
    assert line["bars"]["oracle"] == pytest.approx((0.5, 0.5, False))
    assert line["bars"]["ceiling"][2]  # half of nothing
