"""The gradient spike guard (matching.spike_limit, rdd.matching.spikes) against hand values."""

from __future__ import annotations

import pytest
import torch

from rdd.matching.spikes import DECAY, SpikeGuard
from rdd.matching.trajectory import TrajectoryMatching
from tests.matching.test_trajectory import C, H, K, ScriptedMatcher, W, tiny_learner


def with_grads(*grads: torch.Tensor) -> list[torch.Tensor]:
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    return params


def test_the_first_step_sets_the_means_and_changes_nothing() -> None:
    guard = SpikeGuard(limit=10.0)
    grads = [torch.randn(5, dtype=torch.float64) * 1e3, torch.tensor(7.0)]
    params = with_grads(*grads)
    guard(params)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
    torch.testing.assert_close(guard.means, torch.tensor([float(grads[0].norm()), 7.0]))


def test_a_gradient_within_the_bound_is_left_bit_for_bit() -> None:
    guard = SpikeGuard(limit=10.0)
    guard(with_grads(torch.ones(4)))  # mean norm 2
    inside = torch.randn(4, generator=torch.Generator().manual_seed(0)) * 4  # norm < 20
    params = with_grads(inside)
    guard(params)
    assert torch.equal(params[0].grad, inside)
    expected_mean = DECAY * 2.0 + (1 - DECAY) * float(inside.norm())
    assert float(guard.means[0]) == pytest.approx(expected_mean, rel=1e-6)
    assert int(guard.cut.sum()) == 0


def test_a_spike_is_scaled_to_limit_times_the_mean_and_only_its_tensor() -> None:
    guard = SpikeGuard(limit=10.0)
    guard(with_grads(torch.full((4,), 0.5), torch.tensor(3.0)))  # means 1 and 3
    spike, calm = torch.tensor([300.0, -400.0, 0.0, 0.0]), torch.tensor(-4.0)  # norms 500, 4
    params = with_grads(spike, calm)
    guard(params)
    # direction kept, norm cut to 10 * 1: (300, -400) / 500 * 10 = (6, -8)
    torch.testing.assert_close(params[0].grad, torch.tensor([6.0, -8.0, 0.0, 0.0]))
    assert torch.equal(params[1].grad, calm)
    # the mean takes the norm let through (the bound), not the spike
    expected = [DECAY * 1 + (1 - DECAY) * 10, DECAY * 3 + (1 - DECAY) * 4]
    torch.testing.assert_close(guard.means, torch.tensor(expected))
    assert guard.cut.tolist() == [1.0, 0.0]


def test_the_running_mean_is_the_exponential_average_of_the_let_through_norms() -> None:
    guard = SpikeGuard(limit=3.0)
    norms = [1.0, 2.0, 2.5, 100.0, 1.5]
    mean, seen = None, []
    for norm in norms:
        params = with_grads(torch.tensor([norm, 0.0]))
        guard(params)
        seen.append(float(params[0].grad.norm()))
        if mean is None:
            mean = norm
            continue
        let_through = min(norm, 3.0 * mean)
        assert seen[-1] == pytest.approx(let_through, rel=1e-6)
        mean = DECAY * mean + (1 - DECAY) * let_through
        assert float(guard.means[0]) == pytest.approx(mean, rel=1e-6)
    # by hand: means 1, 1.1, 1.24, so the spike of 100 is cut to 3 * 1.24
    assert seen[3] == pytest.approx(3.72, rel=1e-6)


def test_off_and_invalid_limits() -> None:
    guard = SpikeGuard(limit=None)
    params = with_grads(torch.ones(3))
    guard(params)
    params[0].grad = torch.full((3,), 1e9)
    guard(params)
    assert torch.equal(params[0].grad, torch.full((3,), 1e9)) and guard.means is None
    with pytest.raises(ValueError, match="> 1"):
        SpikeGuard(limit=1.0)


def test_the_guard_state_round_trips_and_acts_alike() -> None:
    first = SpikeGuard(limit=4.0)
    for scale in (1.0, 2.0, 1.5):
        first(with_grads(torch.full((3,), scale)))
    second = SpikeGuard(limit=4.0)
    second.load_state_dict(first.state_dict())
    spikes = [with_grads(torch.full((3,), 50.0)) for _ in range(2)]
    first(spikes[0])
    second(spikes[1])
    assert torch.equal(spikes[0][0].grad, spikes[1][0].grad)
    assert torch.equal(first.means, second.means) and torch.equal(first.cut, second.cut)


def test_mtt_keeps_the_guard_in_its_checkpoint_state_and_refuses_a_bad_limit() -> None:
    matcher = TrajectoryMatching(spike_limit=5.0)
    matcher.guard_gradients(with_grads(torch.ones(2)))
    state = matcher.state_dict()
    again = TrajectoryMatching(spike_limit=5.0)
    again.load_state_dict(state, ctx=None)
    assert torch.equal(again.spikes.means, matcher.spikes.means)
    TrajectoryMatching(spike_limit=5.0).load_state_dict({}, ctx=None)  # a pre-guard checkpoint
    from rdd.config.errors import UserError

    with pytest.raises(UserError, match="matching.spike_limit"):
        TrajectoryMatching(spike_limit=1.0)


class GuardedMatcher(ScriptedMatcher):
    """A scripted loss whose gradients go through a spike guard, as MTT's do."""

    def __init__(self, losses, limit: float) -> None:
        super().__init__(losses)
        self.spikes = SpikeGuard(limit)

    def guard_gradients(self, params) -> None:
        self.spikes(params)


def test_the_learner_steps_with_the_cut_gradient() -> None:
    # iteration 0: gradient 1 per pixel; iteration 1: 1000 per pixel, cut to 10x the mean
    # norm, i.e. 10 per pixel; SGD with lr 1 and no momentum moves the images by 1 then 10.
    start = torch.randn(K * 2, C, H, W)
    scripted = GuardedMatcher(
        [lambda ctx: ctx.images.sum(), lambda ctx: 1000 * ctx.images.sum()], limit=10.0
    )
    learner, trainer = tiny_learner(scripted, start.clone())
    trainer.fit(learner)
    torch.testing.assert_close(learner.images.detach(), start - 1 - 10)
    unguarded = ScriptedMatcher([lambda ctx: ctx.images.sum(), lambda ctx: 1000 * ctx.images.sum()])
    learner, trainer = tiny_learner(unguarded, start.clone())
    trainer.fit(learner)
    torch.testing.assert_close(learner.images.detach(), start - 1 - 1000)
