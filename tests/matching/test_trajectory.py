"""MTT (matching=mtt): the unrolled loss against a hand computation, gradients, guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rdd.config.errors import NonFiniteError, UserError
from rdd.experts import Trajectories, flat_parameters
from rdd.matching import Matcher
from rdd.matching.trajectory import TrajectoryMatching
from rdd.risk import MaxGroup
from tests.fakes import FakeContext

K, C, H, W = 3, 1, 2, 2  # classes and a tiny image shape
D = C * H * W


def linear_net() -> nn.Module:
    """Softmax regression: its cross-entropy gradient has a closed form for the oracle."""
    return nn.Sequential(nn.Flatten(), nn.Linear(D, K)).double()


def write_expert(path, snapshots: list[torch.Tensor]) -> Trajectories:
    torch.save(
        {"format": "rdd-expert/1", "params": torch.stack(snapshots).float(), "names": []}, path
    )
    return Trajectories([path])


def mtt_context(ipc: int = 2, lr: float = 0.5, risk: nn.Module | None = None) -> FakeContext:
    """Fixed float64 synthetic and real data (12 real images in two subgroups per class), the
    softmax-regression student seeded 5, and a learned step size starting at ``lr``."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(K * ipc, C, H, W, generator=gen, dtype=torch.float64)
    real = torch.randn(12, C, H, W, generator=gen, dtype=torch.float64)
    real_labels = torch.arange(12) % K
    return FakeContext(
        images,
        torch.arange(K).repeat_interleave(ipc),
        real,
        real_labels,
        real_labels * 2 + (torch.arange(12) // K) % 2,
        make_net=linear_net,
        net_seed=5,
        risk=risk,
        num_groups=2 * K,
        syn_lr=lr,
        seed=1,
    )


def expert_snapshots(seed: int = 3, epochs: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(D * K + K, generator=gen) * 0.3 for _ in range(epochs + 1)]


def oracle_student(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float, steps: int
):
    """Softmax regression by hand: grad_W = (p - onehot)^T x / n, grad_b = mean(p - onehot)."""
    onehot = np.eye(K)[y]
    for _ in range(steps):
        logits = x @ w.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w, b = w - lr * (p - onehot).T @ x / len(x), b - lr * (p - onehot).mean(0)
    return w, b


def oracle_loss(ctx: FakeContext, snapshots, start: int, epochs: int, steps: int) -> float:
    begin, end = (s.double().numpy() for s in (snapshots[start], snapshots[start + epochs]))
    w, b = begin[: D * K].reshape(K, D), begin[D * K :]
    x = ctx.images.detach().reshape(len(ctx.labels), D).numpy()
    w, b = oracle_student(w, b, x, ctx.labels.numpy(), float(ctx.syn_lr), steps)
    student = np.concatenate([w.ravel(), b])
    return float(((student - end) ** 2).sum() / ((begin - end) ** 2).sum())


def matcher(**overrides) -> TrajectoryMatching:
    settings = {"syn_steps": 2, "expert_epochs": 2, "max_start_epoch": 1, "dsa": False}
    return TrajectoryMatching(**(settings | overrides))


def test_two_step_loss_equals_a_hand_unrolled_computation(tmp_path) -> None:
    snapshots = expert_snapshots()
    mtt = matcher()
    mtt.attach(write_expert(tmp_path / "e.pt", snapshots))
    ctx = mtt_context()
    stats = mtt.step(ctx)
    want = oracle_loss(ctx, snapshots, start=0, epochs=2, steps=2)
    assert float(ctx.losses[0]) == pytest.approx(want, rel=1e-6)
    assert stats["param_loss"] == pytest.approx(want, rel=1e-6)


def test_minibatches_cover_the_set_and_steps_continue_from_the_last(tmp_path) -> None:
    """batch_syn = the set size / 2, 2 steps: one pass over all images in two halves."""
    snapshots = expert_snapshots()
    mtt = matcher(batch_syn=3)
    mtt.attach(write_expert(tmp_path / "e.pt", snapshots))
    ctx = mtt_context()
    mtt.step(ctx)
    # The same two batches by hand, from the permutation the matcher drew.
    ctx2 = mtt_context()
    gen = ctx2.generator
    torch.randint(1, (1,), generator=gen), torch.randint(1, (1,), generator=gen)  # expert, start
    order = reversed(torch.randperm(6, generator=gen).split(3))  # distill.py pops the last
    begin = snapshots[0].double().numpy()
    w, b = begin[: D * K].reshape(K, D), begin[D * K :]
    x = ctx2.images.detach().reshape(6, D).numpy()
    for idx in order:
        w, b = oracle_student(w, b, x[idx.numpy()], ctx2.labels.numpy()[idx.numpy()], 0.5, 1)
    end = snapshots[2].double().numpy()
    want = ((np.concatenate([w.ravel(), b]) - end) ** 2).sum() / ((begin - end) ** 2).sum()
    assert float(ctx.losses[0]) == pytest.approx(want, rel=1e-6)


def test_gradients_reach_images_and_step_size_and_match_finite_differences(tmp_path) -> None:
    snapshots = expert_snapshots()
    mtt = matcher()
    mtt.attach(write_expert(tmp_path / "e.pt", snapshots))
    ctx = mtt_context()
    mtt.step(ctx)
    img_grad, lr_grad = torch.autograd.grad(ctx.losses[0], [ctx.images, ctx.syn_lr])
    assert img_grad.abs().sum() > 0 and lr_grad.abs() > 0

    def loss_at(images: torch.Tensor, lr: float) -> float:
        probe = mtt_context(lr=lr)
        probe.images.data.copy_(images)
        return oracle_loss(probe, snapshots, 0, 2, 2)

    eps = 1e-6
    base = ctx.images.detach()
    for flat_index in (0, 7, 20):
        bump = torch.zeros_like(base).flatten()
        bump[flat_index] = eps
        bump = bump.view_as(base)
        numeric = (loss_at(base + bump, 0.5) - loss_at(base - bump, 0.5)) / (2 * eps)
        assert float(img_grad.flatten()[flat_index]) == pytest.approx(numeric, rel=1e-4, abs=1e-9)
    numeric_lr = (loss_at(base, 0.5 + eps) - loss_at(base, 0.5 - eps)) / (2 * eps)
    assert float(lr_grad) == pytest.approx(numeric_lr, rel=1e-4)


def test_robust_term_adds_the_students_group_risk_on_real_data(tmp_path) -> None:
    snapshots = expert_snapshots()
    mtt = matcher(robust_weight=0.3)
    mtt.attach(write_expert(tmp_path / "e.pt", snapshots))
    ctx = mtt_context(risk=MaxGroup())
    mtt.step(ctx)
    # Oracle: the worst subgroup's mean cross-entropy of the hand-unrolled student.
    begin = snapshots[0].double().numpy()
    w, b = begin[: D * K].reshape(K, D), begin[D * K :]
    x = ctx.images.detach().reshape(6, D).numpy()
    w, b = oracle_student(w, b, x, ctx.labels.numpy(), 0.5, 2)
    logits = ctx.real_x.reshape(12, D).numpy() @ w.T + b
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -log_p[np.arange(12), ctx.real_y.numpy()]
    groups = ctx.real_groups.numpy()
    worst = max(ce[groups == g].mean() for g in np.unique(groups))
    want = oracle_loss(ctx, snapshots, 0, 2, 2) + 0.3 * worst
    assert float(ctx.losses[0]) == pytest.approx(want, rel=1e-6)


def test_start_epochs_stay_below_max_start_epoch(tmp_path) -> None:
    mtt = matcher(max_start_epoch=3, expert_epochs=1, syn_steps=1)
    mtt.attach(write_expert(tmp_path / "e.pt", expert_snapshots(epochs=3)))
    starts = set()
    ctx = mtt_context()
    for _ in range(30):
        starts.add(mtt.step(ctx)["start_epoch"])
    assert starts == {0.0, 1.0, 2.0}


def test_a_buffer_too_short_for_the_start_epochs_is_refused(tmp_path) -> None:
    mtt = matcher(max_start_epoch=3, expert_epochs=2)
    with pytest.raises(UserError, match="experts.epochs=4"):
        mtt.attach(write_expert(tmp_path / "e.pt", expert_snapshots(epochs=3)))


@pytest.mark.parametrize(
    "key, value", [("syn_steps", 0), ("lr_teacher", -0.01), ("lr_lr", 0), ("batch_syn", 0)]
)
def test_invalid_settings_are_one_line_errors(key, value) -> None:
    with pytest.raises(UserError, match=f"matching.{key}"):
        TrajectoryMatching(**{key: value})


def test_trajectories_read_snapshots_and_survive_pickling(tmp_path) -> None:
    import pickle

    snapshots = expert_snapshots()
    traj = write_expert(tmp_path / "e.pt", snapshots)
    assert traj.epochs == 3 and len(traj) == 1
    assert torch.equal(traj.snapshot(0, 2), snapshots[2])
    assert torch.equal(pickle.loads(pickle.dumps(traj)).snapshot(0, 1), snapshots[1])
    net = linear_net()
    assert flat_parameters(net).shape == snapshots[0].shape


# -- the learner's guards (any method; MTT's step size) -----------------------------------------
def tiny_learner(matcher_obj, images: torch.Tensor | None = None):
    import lightning as L

    from rdd.distill.learner import SyntheticSetLearner

    images = torch.randn(K * 2, C, H, W) if images is None else images
    learner = SyntheticSetLearner(
        matcher_obj, linear_net, images, torch.randn(12, C, H, W), torch.arange(12) % K, K, 2, 0
    )
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return learner, trainer


class ScriptedMatcher(Matcher):
    """Returns a given loss per iteration: to drive the learner's guards."""

    lr_img, momentum_img = 1.0, 0.0
    initial_step_size = 0.01  # learns a step size, as MTT does
    lr_lr, momentum_lr, lr_min, lr_max = 1.0, 0.0, 1e-4, 0.05

    def __init__(self, losses) -> None:
        self.losses, self.iterations = losses, len(losses)

    def step(self, ctx) -> dict[str, float]:
        loss = self.losses[ctx.iteration](ctx)
        ctx.image_step(loss)
        return {"match_loss": float(loss.detach())}


def test_the_step_size_is_kept_in_its_bounds() -> None:
    # d/d lr of +100 lr pushes it down by 100 (SGD lr 1): far below zero without the bound.
    up = ScriptedMatcher([lambda ctx: 100 * ctx.syn_lr + ctx.images.sum() * 0])
    learner, trainer = tiny_learner(up)
    trainer.fit(learner)
    assert learner.learned_lr == pytest.approx(1e-4)
    down = ScriptedMatcher([lambda ctx: -100 * ctx.syn_lr + ctx.images.sum() * 0])
    learner, trainer = tiny_learner(down)
    trainer.fit(learner)
    assert learner.learned_lr == pytest.approx(0.05)


def test_a_nan_loss_stops_and_keeps_the_last_good_set() -> None:
    def blow_up(ctx):
        return ctx.images.sum() * float("nan")

    scripted = ScriptedMatcher([lambda ctx: (ctx.images**2).sum(), blow_up])
    learner, trainer = tiny_learner(scripted)
    kept = {}
    learner.on_nonfinite = lambda images, labels, lr, it: kept.update(images=images, it=it)
    with pytest.raises(NonFiniteError, match="iteration 1.*matching.lr_img or matching.lr_lr"):
        trainer.fit(learner)
    assert kept["it"] == 1 and torch.isfinite(kept["images"]).all()


def test_a_step_that_makes_images_infinite_is_undone() -> None:
    scripted = ScriptedMatcher([lambda ctx: (ctx.images * 10).sum()])
    scripted.lr_img = 1e38  # a finite loss whose step overflows float32
    start = torch.randn(K * 2, C, H, W)
    learner, trainer = tiny_learner(scripted, start)
    kept = {}
    learner.on_nonfinite = lambda images, labels, lr, it: kept.update(images=images)
    with pytest.raises(NonFiniteError, match="non-finite"):
        trainer.fit(learner)
    assert torch.equal(kept["images"], start) and torch.equal(learner.images.detach(), start)


def test_evaluation_uses_the_learned_step_size_unless_told_not_to() -> None:
    from omegaconf import OmegaConf

    from rdd.eval.settings import with_learned_lr

    settings = OmegaConf.create({"lr": 0.01, "lr_from_synset": True, "epochs": 3})
    assert with_learned_lr(settings, 0.0234).lr == pytest.approx(0.0234)
    assert with_learned_lr(settings, None).lr == 0.01  # DC, DM, ...: no learned step size
    fixed = OmegaConf.merge(settings, {"lr_from_synset": False})
    assert with_learned_lr(fixed, 0.0234).lr == 0.01


def test_a_run_stopped_by_nan_keeps_its_last_good_set(tmp_path) -> None:
    """Through rdd.run: a one-line error naming the kept file; the file holds finite images."""
    from conftest import TINY, compose_config

    from rdd.run import run
    from rdd.synset import SyntheticSet

    cfg = compose_config(*TINY, "matching=dsa", "matching.lr_img=1e38", output_dir=tmp_path)
    with pytest.raises(
        UserError, match=r"at iteration 0: lower matching.lr_img.*kept in .*synset.pt"
    ):
        run(cfg)
    kept = SyntheticSet.load(tmp_path)
    assert kept.meta["stopped_at_iteration"] == 0 and torch.isfinite(kept.images).all()
    assert not (tmp_path / "metrics.json").exists()
