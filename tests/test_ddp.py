"""Two gloo processes on the CPU give the single-process risk value and gradients.

Each rank holds the same global batch (the run's generators are identical on every rank),
works on its shard and all-reduces sums and counts; these tests run the matcher's robust
pieces in 2 processes and compare with one process on the same global batch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rdd.matching.gradient import GradientMatching
from rdd.matching.robust import risk_cross_entropy
from rdd.risk import CVaR, Entropic, MeanRisk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_robust_matching import FixedGroupsContext  # noqa: E402


def matching_figures(risk) -> dict[str, torch.Tensor]:
    """Risk value of the class losses and the synthetic images' gradient."""
    ctx = FixedGroupsContext(risk)
    losses = GradientMatching().class_losses(ctx.net, ctx)
    (grad,) = torch.autograd.grad(losses.sum(), ctx.images)
    return {"value": losses.detach(), "image_grad": grad}


def network_figures(risk) -> dict[str, torch.Tensor]:
    """The network-training risk on a fixed mixed batch and the network's gradient."""
    ctx = FixedGroupsContext(risk)
    labels = torch.tensor([0, 1] * 6)
    x, y, g = ctx.real, labels, ctx.groups
    from rdd.distributed import all_reduce_grads, shard

    value, _, _ = risk_cross_entropy(ctx.net(shard(x)), shard(y), shard(g), 3, risk)
    ctx.net.zero_grad()
    value.backward()
    all_reduce_grads(ctx.net)
    return {
        "value": value.detach(),
        "net_grad": torch.cat([p.grad.flatten() for p in ctx.net.parameters()]),
    }


RISKS = {"mean": MeanRisk, "cvar": lambda: CVaR(alpha=0.5), "entropic": lambda: Entropic(beta=2.0)}


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    results = {}
    for name, make in RISKS.items():
        results[f"matching/{name}"] = matching_figures(make())
        results[f"networks/{name}"] = network_figures(make())
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process(tmp_path) -> None:
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        distributed = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, make in RISKS.items():
            single = {**matching_figures(make()), **network_figures(make())}
            for key, value in distributed[f"matching/{name}"].items():
                want = single[key] if key != "value" else matching_figures(make())["value"]
                assert torch.allclose(value, want, rtol=1e-9, atol=1e-12), (name, key)
            net = distributed[f"networks/{name}"]
            assert torch.allclose(net["net_grad"], single["net_grad"], rtol=1e-9, atol=1e-12), name
            assert torch.allclose(net["value"], network_figures(make())["value"], rtol=1e-9), name
