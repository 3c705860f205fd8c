"""Risk measures against independent oracles (numpy, brute force, hand computations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rdd.config.schemas import GENERATED
from rdd.risk import CVaR, Entropic, MaxGroup, MeanRisk, TwoLevel, cvar_weights
from rdd.robust.plan import build_risk
from tests.conftest import compose_config

D = torch.float64
SEEDS = range(8)


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=D)


def random_case(seed: int, integer: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Random group means, counts (some groups empty) and a level alpha."""
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(2, 7))
    means = rng.normal(size=groups) * 3
    counts = rng.integers(0, 7, size=groups).astype(float)
    if not integer:
        counts *= rng.uniform(0.1, 2.0, size=groups)
    counts[rng.integers(groups)] = max(counts.max(), 1.0)  # at least one non-empty group
    return means, counts, float(rng.uniform(0.05, 0.95))


def risk_of(risk, means: np.ndarray, counts: np.ndarray) -> float:
    sums, counts_t = t64(means * counts), t64(counts)
    return float(risk(sums, counts_t))


# Oracles, in numpy and independent of the code under test.


def cvar_by_atoms(means: np.ndarray, counts: np.ndarray, alpha: float) -> float:
    """Expand group g into counts[g] unit atoms; average the top (1 - alpha) * N of them."""
    atoms = np.sort(np.repeat(means, counts.astype(int)))[::-1]
    k = (1 - alpha) * len(atoms)
    whole = int(math.floor(k))
    top = atoms[:whole].sum() + (k - whole) * (atoms[whole] if whole < len(atoms) else 0.0)
    return float(top / k)


def cvar_rockafellar_uryasev(means: np.ndarray, counts: np.ndarray, alpha: float) -> float:
    """min_t t + E[(Z - t)_+] / (1 - alpha); the minimum is attained at an atom."""
    p = counts / counts.sum()
    present = means[counts > 0]
    return min(t + (p * np.maximum(means - t, 0)).sum() / (1 - alpha) for t in present)


def entropic_oracle(means: np.ndarray, counts: np.ndarray, beta: float) -> float:
    """(s / beta) log E exp(beta Z / s) with s = |E[Z]|: the entropic risk relative to the
    mean (its magnitude: a scale, so the tilt still leans towards the larger losses)."""
    p = counts / counts.sum()
    s = abs((p * means).sum())
    return float(s * np.log((p * np.exp(beta * means / s)).sum()) / beta)


def finite_difference(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        step = torch.zeros_like(x)
        step[i] = h
        grad[i] = (fn(x + step) - fn(x - step)) / (2 * h)
    return grad


# CVaR


@pytest.mark.parametrize("seed", SEEDS)
def test_cvar_equals_brute_force_over_atoms(seed: int) -> None:
    means, counts, alpha = random_case(seed, integer=True)
    assert risk_of(CVaR(alpha), means, counts) == pytest.approx(
        cvar_by_atoms(means, counts, alpha), rel=1e-9, abs=1e-9
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_cvar_equals_rockafellar_uryasev_minimum(seed: int) -> None:
    means, counts, alpha = random_case(100 + seed, integer=False)
    assert risk_of(CVaR(alpha), means, counts) == pytest.approx(
        cvar_rockafellar_uryasev(means, counts, alpha), rel=1e-9, abs=1e-9
    )


def test_cvar_at_zero_is_the_mean_and_near_one_the_max() -> None:
    means, counts = np.array([1.0, 5.0, -2.0, 3.0]), np.array([2.0, 1.0, 4.0, 0.0])
    mean = (means * counts).sum() / counts.sum()
    assert risk_of(CVaR(0.0), means, counts) == pytest.approx(mean)
    assert risk_of(CVaR(1 - 1e-9), means, counts) == pytest.approx(5.0)


def test_cvar_takes_the_upper_tail() -> None:
    # Masses 3/4 at 1 and 1/4 at 10; the worst half is 1/4 at 10 plus 1/4 at 1: (2.5 + 0.25) / 0.5.
    # The lower tail (the paper's code) would give 1.
    assert risk_of(CVaR(0.5), np.array([1.0, 10.0]), np.array([3.0, 1.0])) == pytest.approx(5.5)


def test_cvar_weights_fill_the_tail_greedily() -> None:
    w = cvar_weights(t64([2.0, 7.0, 5.0]), t64([0.5, 0.25, 0.25]), alpha=0.4)
    # Tail 0.6: 0.25 at 7, 0.25 at 5, the remaining 0.1 at 2.
    torch.testing.assert_close(w, t64([0.1, 0.25, 0.25]) / 0.6)


# Entropic


def test_entropic_between_mean_and_max() -> None:
    means, counts = np.array([1.0, 2.5, 0.5]), np.array([3.0, 1.0, 2.0])
    sums = torch.tensor(means * counts, dtype=torch.float32)
    counts32 = torch.tensor(counts, dtype=torch.float32)
    mean = (means * counts).sum() / counts.sum()
    assert float(Entropic(1e-6)(sums, counts32)) == pytest.approx(mean, rel=1e-5)
    # log E exp(beta Z / s) >= log(p_max) + beta max / s: within s log(1 / p_max) / beta of
    # the max (s: the mean, the unit the relative beta is measured in).
    slack = mean * math.log(counts.sum() / counts[1]) / 1e3
    assert float(Entropic(1e3)(sums, counts32)) == pytest.approx(2.5, abs=slack + 1e-5)


@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_entropic_equals_numpy_oracle(beta: float, seed: int) -> None:
    means, counts, _ = random_case(200 + seed, integer=False)
    assert risk_of(Entropic(beta), means, counts) == pytest.approx(
        entropic_oracle(means, counts, beta), rel=1e-9
    )


# MaxGroup


def test_max_group_ignores_empty_groups() -> None:
    # The empty group's "mean" would be 0, larger than every real mean here.
    sums, counts = t64([-3.0, 0.0, -1.0, -8.0]), t64([1.0, 0.0, 2.0, 4.0])
    assert float(MaxGroup()(sums, counts)) == pytest.approx(-0.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_max_group_is_the_largest_non_empty_mean(seed: int) -> None:
    means, counts, _ = random_case(300 + seed, integer=False)
    assert risk_of(MaxGroup(), means, counts) == pytest.approx(means[counts > 0].max())


def test_smooth_max_group_updates_q_by_hand() -> None:
    # exp(eta * m / s) = 2 ** m, both steps having a mean loss s of 1.
    risk = MaxGroup(smooth=True, eta=math.log(2))
    # Step 1: q = (1/3)(1, 1, 1) * 2 ** (3, 0, 0) = (8, 1, 1) / 3, renormalised (0.8, 0.1, 0.1).
    value = risk(t64([3.0, 0.0, 0.0]), t64([1.0, 1.0, 1.0]))
    torch.testing.assert_close(risk.q, t64([0.8, 0.1, 0.1]))
    assert float(value) == pytest.approx(2.4)
    # Step 2, group 2 empty (not updated; mean over the others (0 + 2) / 2 = 1):
    # (0.8, 0.1 * 2 ** 2, 0.1) = (8, 4, 1) / 13. Weights over the non-empty groups: (8, 4) / 12.
    value = risk(t64([0.0, 2.0, 5.0]), t64([1.0, 1.0, 0.0]))
    torch.testing.assert_close(risk.q, t64([8.0, 4.0, 1.0]) / 13)
    assert float(value) == pytest.approx(2 / 3)


def test_smooth_max_group_is_frozen_in_eval_and_checkpoints_q() -> None:
    risk = MaxGroup(smooth=True, eta=0.5)
    risk(t64([1.0, 2.0]), t64([1.0, 1.0]))
    q = risk.q.clone()
    risk.eval()
    risk(t64([5.0, 0.0]), t64([1.0, 1.0]))
    torch.testing.assert_close(risk.q, q)
    fresh = MaxGroup(smooth=True, eta=0.5)
    fresh.load_state_dict(risk.state_dict())
    torch.testing.assert_close(fresh.q, q)
    with pytest.raises(ValueError, match="groups"):
        risk(t64([1.0, 2.0, 3.0]), t64([1.0, 1.0, 1.0]))


# TwoLevel


def test_two_level_by_hand() -> None:
    # Group 0: losses (1, 3, 2, 6); alpha 0.5 keeps the worst 2: c0 = (6 + 3) / 2 = 4.5.
    # Group 1: losses (2, 4, 0); the worst 1.5 samples: c1 = (4 + 0.5 * 2) / 1.5 = 10 / 3.
    # Group 2 is empty. Risk = ((4.5 + 10/3) / 2 + 2 * 4.5) / (1 + 2) = (155/12) / 3.
    groups = torch.tensor([0, 1, 0, 0, 1, 0, 1])
    losses = t64([1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 0.0]).requires_grad_()
    sums = torch.zeros(3, dtype=D).index_add(0, groups, losses)
    counts = torch.bincount(groups, minlength=3).to(D)
    value = TwoLevel(alpha=0.5, lam=2.0)(sums, counts, losses, groups)
    assert float(value.detach()) == pytest.approx(155 / 36)
    value.backward()
    # Group 0 (the worst): 1/2 inside, 1/2 + 2 outside; group 1: (2/3, 1/3) inside, 1/2 outside.
    expected = t64([0.0, 1 / 6, 1.25, 0.0, 1 / 3, 1.25, 0.0]) / 3  # the weights sum to 1
    torch.testing.assert_close(losses.grad, expected)


def test_two_level_gradient_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 4, (20,), generator=gen)
    losses = torch.rand(20, generator=gen, dtype=D).requires_grad_()
    risk = TwoLevel(alpha=0.7, lam=0.5)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return risk(torch.zeros(4, dtype=D), torch.ones(4, dtype=D), x, groups)

    fn(losses).backward()
    torch.testing.assert_close(losses.grad, finite_difference(fn, losses.detach()))


def test_two_level_needs_sample_losses() -> None:
    with pytest.raises(ValueError, match="per-sample losses"):
        TwoLevel()(t64([2.0, 4.0]), t64([1.0, 3.0]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        TwoLevel()(t64([2.0, 4.0]), t64([1.0, 3.0]), t64([1.0, 2.0]), torch.tensor([0, 2]))


# Shared properties


# Factories, not instances: the smooth MaxGroup keeps state between calls.
ROBUST = {
    "cvar": lambda: CVaR(0.7),
    "entropic": lambda: Entropic(2.0),
    "max_group": lambda: MaxGroup(),
    "smooth_max_group": lambda: MaxGroup(smooth=True, eta=0.3),
}
EVERY = {"none": MeanRisk, **ROBUST, "two_level": lambda: TwoLevel(0.5, 1.0)}


@pytest.mark.parametrize("kind", EVERY)
def test_empty_groups_are_finite_with_zero_gradient(kind: str) -> None:
    risk = EVERY[kind]()
    groups = torch.tensor([0, 0, 2, 3, 3, 3])
    losses = t64([1.0, 2.0, 0.5, 3.0, 0.0, 1.0]).requires_grad_()
    sums = torch.zeros(4, dtype=D).index_add(0, groups, losses).detach().requires_grad_()
    counts = t64([2.0, 0.0, 1.0, 3.0])
    value = risk(sums, counts, losses, groups)
    value.backward()
    assert torch.isfinite(value)
    for grad in (sums.grad, losses.grad):
        assert grad is None or bool(torch.isfinite(grad).all())
    if kind != "none":  # the mean gives an empty sum 1 / N: harmless, no sample feeds it
        assert sums.grad is None or float(sums.grad[1]) == 0.0
    # Every group empty: the risk is 0, still without NaN.
    nothing = torch.zeros(4, dtype=D, requires_grad=True)
    value = risk(nothing, torch.zeros(4), losses[:0], groups[:0])
    value.backward()
    assert float(value.detach()) == 0.0
    if kind != "none":
        assert nothing.grad is None or not nothing.grad.any()


@pytest.mark.parametrize("kind", ROBUST)
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_gradient_is_weights_over_counts(kind: str, seed: int) -> None:
    risk = ROBUST[kind]()
    means, counts, _ = random_case(400 + seed, integer=False)
    sums = t64(means * counts).requires_grad_()
    counts_t = t64(counts)
    weights = risk.group_weights(sums, counts_t)  # the weights the next call will use
    assert float(weights.sum()) == pytest.approx(1.0)
    assert not weights[counts_t == 0].any()
    risk(sums, counts_t).backward()
    present = counts_t > 0
    torch.testing.assert_close(sums.grad[present], (weights / counts_t)[present])
    if getattr(risk, "smooth", False):  # smooth q is state, not a function of the sums
        return
    fn = lambda s: risk(s, counts_t)  # noqa: E731
    if kind == "entropic":
        # The temperature is set from this step's (detached) mean loss s0: the gradient is that
        # of the plain entropic risk at beta / s0, an independent formula, s0 held fixed.
        p = counts_t / counts_t.sum()
        present_means = torch.where(present, sums.detach() / counts_t.clamp_min(1e-300), 0.0)
        s0 = float((p * present_means).sum().abs())
        tilt = risk.beta / s0

        def fn(s: torch.Tensor) -> torch.Tensor:
            m = torch.where(present, s / counts_t.clamp_min(1e-300), 0.0)
            return torch.log((p * torch.exp(tilt * m)).sum()) / tilt

    torch.testing.assert_close(sums.grad, finite_difference(fn, sums.detach()))


def test_risk_parameters_do_not_depend_on_the_loss_scale() -> None:
    """Scaling every loss by c scales each risk by c and leaves its weights unchanged."""
    means, counts, _ = random_case(777, integer=False)
    means = np.abs(means) + 0.1  # losses are non-negative
    sums, counts_t = t64(means * counts), t64(counts)
    for kind, make in EVERY.items():
        if kind == "two_level":
            continue  # per-sample; checked below
        for c in (1e-3, 150.0):
            plain, scaled = make(), make()
            torch.testing.assert_close(
                scaled(sums * c, counts_t), c * plain(sums, counts_t), msg=kind
            )
            if hasattr(plain, "group_weights"):
                torch.testing.assert_close(
                    scaled.group_weights(sums * c, counts_t),
                    plain.group_weights(sums, counts_t),
                    msg=kind,
                )
    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    losses = t64([0.5, 2.0, 1.0, 3.0, 0.2, 4.0])
    sums3 = torch.zeros(3, dtype=D).index_add(0, groups, losses)
    counts3 = torch.bincount(groups, minlength=3).to(D)
    risk = TwoLevel(alpha=0.5, lam=1.0)
    w = risk.sample_weights(losses, groups, 3)
    assert float(w.sum()) == pytest.approx(1.0)  # like every other risk's weights
    torch.testing.assert_close(risk.sample_weights(losses * 150.0, groups, 3), w)
    torch.testing.assert_close(
        risk(sums3 * 150, counts3, losses * 150, groups), 150 * risk(sums3, counts3, losses, groups)
    )


def test_the_mean_accepts_sample_losses_and_ignores_them() -> None:
    value = MeanRisk()(t64([2.0, 4.0]), t64([1.0, 3.0]), t64([9.0]), torch.tensor([0]))
    assert float(value) == pytest.approx(1.5)


@pytest.mark.parametrize(
    "build",
    [
        lambda: CVaR(alpha=1.0),
        lambda: CVaR(alpha=-0.1),
        lambda: Entropic(beta=0.0),
        lambda: MaxGroup(eta=-1.0),
        lambda: TwoLevel(alpha=1.0),
        lambda: TwoLevel(lam=-0.5),
    ],
)
def test_invalid_parameters_raise_at_construction(build) -> None:
    with pytest.raises(ValueError):
        build()


# Configs


@pytest.mark.parametrize(
    ("option", "cls", "params"),
    [
        ("none", MeanRisk, {}),
        ("cvar", CVaR, {"alpha": 0.5}),
        ("entropic", Entropic, {"beta": 1.0}),
        ("max_group", MaxGroup, {"smooth": False, "eta": 0.1}),
        ("two_level", TwoLevel, {"alpha": 0.8, "lam": 1.0}),
    ],
)
def test_every_risk_config_composes_and_instantiates(option, cls, params, tmp_path) -> None:
    cfg = compose_config(f"risk={option}", output_dir=tmp_path)
    risk = build_risk(cfg.risk)
    assert type(risk) is cls and risk.name == option
    assert "on" not in cfg.risk and cfg.robust.targets is None  # where it acts: the robust node
    assert {k: getattr(risk, k) for k in params} == params
    assert ("risk", f"{option}_schema") in GENERATED or option == "none"
