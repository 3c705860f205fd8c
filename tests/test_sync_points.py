"""Regression guard: host-device synchronisations per distillation iteration stay at the audited
numbers (benchmarks/README.md, "Ready for the GPU"). An ``.item()``, ``float(t)``, boolean mask
or blocking copy added inside a matching loop raises a count here, on a CPU, by emulation
(benchmarks/sync_points.py says how)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("sync_points", REPO / "benchmarks" / "sync_points.py")
sync_points = importlib.util.module_from_spec(spec)
sys.modules["sync_points"] = sync_points  # its dataclass looks its module up there
spec.loader.exec_module(sync_points)

# Syncs in one steady iteration (the second) of the tiny runs, per (method, risk); what they
# are: benchmarks/README.md. Lower is fine (then lower the number here); higher is a new sync.
AUDITED = {
    ("dc", "none"): 3,
    ("dc", "cvar"): 3,
    ("dsa", "none"): 3,
    ("dsa", "cvar"): 3,
    ("dm", "none"): 2,
    ("dm", "cvar"): 2,
    ("idm", "none"): 12,
    ("idm", "cvar"): 14,
    ("mtt", "none"): 2,
    ("mtt", "cvar"): 2,
}


def test_the_counter_sees_device_reads_and_not_host_draws() -> None:
    x = torch.randn(4)  # made before counting: a device tensor (images, data, networks)
    gen = torch.Generator().manual_seed(0)
    with sync_points.SyncCounter() as counter:
        for _ in range(3):
            x.sum().item()  # three reads back
        int(torch.randint(5, (1,), generator=gen))  # the CPU generator's draw: host
        order = torch.randperm(4, generator=gen)
        x[order.tolist()[0]]  # an int index: no sync
        x[x > 0]  # a data-dependent shape
        x[order.to(x.device)]  # a blocking copy of host data
        x[sync_points_to_device(order, x.device)]  # pinned, non-blocking: none
        if torch.isfinite(x).all():  # a read back
            pass
    kinds = [(e.kind, e.op) for e in counter.events]
    assert kinds == [("d2h", "item")] * 3 + [
        ("shape", "__getitem__[bool mask]"),
        ("h2d", "to"),
        ("d2h", "__bool__"),
    ]
    assert all("test_sync_points.py" in e.site for e in counter.events)


def sync_points_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    from rdd.parallel.device import to_device

    return to_device(t, device)


@pytest.mark.parametrize("risk", ["none", pytest.param("cvar", marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", ["dc", "dsa", "dm", "idm", "mtt"])
def test_syncs_per_iteration_stay_at_the_audited_number(
    method: str, risk: str, mtt_buffer: Path, tmp_path: Path
) -> None:
    args = SimpleNamespace(device="cpu", iterations=2)
    row = sync_points.count_run(method, risk, args, tmp_path, mtt_buffer)
    count = row["syncs_per_iteration"][-1]
    assert count <= AUDITED[method, risk], (
        f"{method}/{risk}: {count} host-device syncs per iteration, audited "
        f"{AUDITED[method, risk]} (fewer: lower AUDITED); where: {row['sites']}"
    )
