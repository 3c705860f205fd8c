"""matching.memory=constant: MTT's adjoint unroll against autograd through the unroll (full).

The oracle is today's implementation (memory=full) on the same small problem: the loss, the
gradients with respect to the images and the learned step size, and the generator's state
after the iteration must agree. Tolerances, relative to the largest entry: float64 1e-10
(measured when written: loss 0 to 1.6e-16, gradients at most 6.3e-16); float32 1e-5
(measured: loss 6.0e-8, image gradient 2.7e-7, step-size gradient 9.3e-8).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rdd.config.errors import UserError
from rdd.experts import Trajectories
from rdd.matching.trajectory import TrajectoryMatching
from rdd.nets.convnet import ConvNet
from rdd.risk import MaxGroup
from tests.fakes import FakeContext

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.` for spawned workers

K, C, S = 3, 3, 8  # classes, channels, image side


def tiny_convnet(dtype: torch.dtype):
    return lambda: ConvNet(C, K, (S, S), width=4, depth=2).to(dtype)


def conv_context(dtype: torch.dtype, risk=None, ipc: int = 2) -> FakeContext:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(K * ipc, C, S, S, generator=gen, dtype=dtype)
    real = torch.randn(12, C, S, S, generator=gen, dtype=dtype)
    real_y = torch.arange(12) % K
    return FakeContext(
        images,
        torch.arange(K).repeat_interleave(ipc),
        real,
        real_y,
        real_y * 2 + (torch.arange(12) // K) % 2,
        make_net=tiny_convnet(dtype),
        net_seed=5,
        risk=risk,
        num_groups=2 * K,
        syn_lr=0.05,
        seed=1,
    )


def expert(path: Path, epochs: int = 3) -> Trajectories:
    """Random snapshots near a seeded tiny ConvNet's start (a student that trains sensibly)."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        net = tiny_convnet(torch.float32)()
    start = torch.nn.utils.parameters_to_vector(net.parameters())
    gen = torch.Generator().manual_seed(3)
    snaps = [
        start.detach() + 0.05 * e * torch.randn(start.shape, generator=gen)
        for e in range(epochs + 1)
    ]
    torch.save({"format": "rdd-expert/1", "params": torch.stack(snaps), "names": []}, path)
    return Trajectories([path])


def figures(memory: str, path: Path, dtype=torch.float64, risk=None, **settings) -> dict:
    """One MTT iteration: loss, image and step-size gradients, the generator's state after."""
    settings = {"syn_steps": 4, "expert_epochs": 2, "max_start_epoch": 2} | settings
    mtt = TrajectoryMatching(memory=memory, **settings)
    mtt.attach(expert(path))
    ctx = conv_context(dtype, risk)
    mtt.step(ctx)
    image_grad, lr_grad = torch.autograd.grad(ctx.losses[0], [ctx.images, ctx.syn_lr])
    return {
        "loss": ctx.losses[0].detach(),
        "image_grad": image_grad,
        "lr_grad": lr_grad,
        "generator": ctx.generator.get_state(),
    }


def assert_close(got: dict, want: dict, rel: float) -> None:
    for key in ("loss", "image_grad", "lr_grad"):
        scale = want[key].abs().max()
        assert scale > 0, key  # a gradient that vanished would compare equal trivially
        assert (got[key] - want[key]).abs().max() <= rel * scale, key


CASES = {
    "whole set, no DSA": {"dsa": False},
    "mini-batches, DSA": {"batch_syn": 2, "syn_steps": 5},
    "whole set, DSA, all ops": {"dsa_mode": "all", "syn_steps": 3},
}


@pytest.mark.parametrize("case", CASES)
def test_constant_memory_gives_the_loss_and_gradients_of_full(case, tmp_path) -> None:
    full = figures("full", tmp_path / "e.pt", **CASES[case])
    constant = figures("constant", tmp_path / "e.pt", **CASES[case])
    assert_close(constant, full, rel=1e-10)
    assert torch.equal(constant["generator"], full["generator"])
    fresh = torch.Generator().manual_seed(1).get_state()
    assert not torch.equal(full["generator"], fresh)  # the iteration did draw


def test_float32_agrees_to_float32_rounding(tmp_path) -> None:
    settings = {"batch_syn": 3, "dtype": torch.float32}
    assert_close(
        figures("constant", tmp_path / "e.pt", **settings),
        figures("full", tmp_path / "e.pt", **settings),
        rel=1e-5,
    )


def test_the_robust_term_back_propagates_through_the_adjoint(tmp_path) -> None:
    """The student's group risk on real data joins lambda_N; it must reach the images too."""
    settings = {"batch_syn": 3, "robust_weight": 0.3, "risk": MaxGroup()}
    full = figures("full", tmp_path / "e.pt", **settings)
    assert_close(figures("constant", tmp_path / "e.pt", **settings), full, rel=1e-10)
    plain = figures("full", tmp_path / "e.pt", batch_syn=3)
    assert not torch.allclose(plain["image_grad"], full["image_grad"])


def test_dropping_the_hessian_term_would_be_caught(tmp_path, monkeypatch) -> None:
    """The oracle tells a first-order variant (lambda kept at dL/dtheta_N, TESLA as we read
    it) from the exact adjoint: without the H_i^T lambda terms the gradients move by more
    than the tolerances above."""
    from rdd.matching import adjoint

    full = figures("full", tmp_path / "e.pt", batch_syn=2, syn_steps=5)
    exact = adjoint._Unroll.step

    def first_order(self, theta, images, lr, batch, create_graph):
        if not create_graph:
            return exact(self, theta, images, lr, batch, create_graph)
        free = tuple(t.detach().requires_grad_(True) for t in theta)
        new = exact(self, free, images, lr, batch, create_graph)
        # The value theta - lr g and its X and lr derivatives, but d/dtheta = I (no H).
        return tuple(t + (n - f) for t, n, f in zip(theta, new, free, strict=True))

    monkeypatch.setattr(adjoint._Unroll, "step", first_order)
    approx = figures("constant", tmp_path / "e.pt", batch_syn=2, syn_steps=5)
    assert torch.allclose(approx["loss"], full["loss"], rtol=1e-12)  # the same forward
    with pytest.raises(AssertionError):
        assert_close(approx, full, rel=1e-4)


def test_an_unknown_memory_mode_is_a_one_line_error() -> None:
    with pytest.raises(UserError, match="matching.memory='low'"):
        TrajectoryMatching(memory="low")


# -- DDP: two gloo processes, constant memory, equal one process with full ---------------------
def ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    got = figures("constant", Path(out_dir) / f"e{rank}.pt", batch_syn=4, syn_steps=3, risk=None)
    dist.all_reduce(got["image_grad"])  # as the learner sums MTT's shard image gradients
    torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_constant_memory_on_two_gloo_processes_equals_one_process_full(tmp_path) -> None:
    mp.spawn(ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    single = figures("full", tmp_path / "e.pt", batch_syn=4, syn_steps=3)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert_close(got, single, rel=1e-10)
        assert torch.equal(got["generator"], single["generator"])


# -- a whole run: tiny digits MTT, two iterations --------------------------------------------
def distilled(memory: str, buffer: Path, out: Path) -> tuple[torch.Tensor, float]:
    from rdd.run import distill, prepare
    from tests.conftest import MTT_EXPERTS, TINY, compose_config

    overrides = [o for o in TINY if not o.startswith("matching.iterations")]
    overrides += ["matching=mtt", "matching.iterations=2", "matching.syn_steps=3"]
    overrides += ["matching.batch_syn=8", "matching.expert_epochs=1", "matching.max_start_epoch=1"]
    overrides += [*MTT_EXPERTS, f"experts.root={buffer}", f"matching.memory={memory}"]
    images, _, lr = distill(prepare(compose_config(*overrides, output_dir=out)))
    return images, lr


def test_a_tiny_digits_run_gives_the_set_of_full(mtt_buffer, tmp_path) -> None:
    """matching=mtt matching.memory=constant through rdd.run's distill: the same images and
    learned step size as memory=full after two iterations (the second starts from the first's
    generator state, so a differing draw would show). That the step size moved shows the
    gradients were not zero."""
    full_images, full_lr = distilled("full", mtt_buffer, tmp_path / "full")
    images, lr = distilled("constant", mtt_buffer, tmp_path / "constant")
    assert torch.allclose(images, full_images, rtol=0, atol=1e-5)  # normalised pixels
    assert lr == pytest.approx(full_lr, rel=1e-6) and full_lr != pytest.approx(0.001, rel=1e-9)


def test_constant_memory_on_the_reference_parity_problem_equals_full() -> None:
    """benchmarks/parity/mtt_parity.py's problem (ConvNet-3 w128, 32x32, 4 steps on batches of
    2, float32): constant against full within 1e-5 relative (measured: loss bitwise, image
    gradient 6.8e-7, step-size gradient 3.1e-7). Compared with full rather than the stored
    reference: on this checkout full itself misses the fixture (one image-gradient entry 2.3 %
    off, test_parity.py fails at the branch's base commit too)."""
    from tests.matching.test_parity import harness

    parity = harness("mtt_parity.py")
    full, constant = parity.rdd_figures("full"), parity.rdd_figures("constant")
    for key in ("loss", "image_grad", "lr_grad"):
        scale = full[key].abs().max()
        assert scale > 0 and (constant[key] - full[key]).abs().max() <= 1e-5 * scale, key
