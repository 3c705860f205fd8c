"""benchmarks/bench_vs_reference.py's ``--device``: a device the machine lacks is refused in one
line, and both sides of every work item run on the requested device even where the references'
own rule would pick another (their ``get_network`` moves networks to 'cuda', in DataParallel,
whenever CUDA has devices). Without a GPU, a machine with two is what the references are shown
(``torch.cuda.device_count`` patched to 2) and the CPU is requested; the references are the
stand-ins in tests/fixtures/fake_reference (the real checkouts are not in this repository)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import REPO

BENCHMARKS = REPO / "benchmarks"
FAKE = REPO / "tests" / "fixtures" / "fake_reference"
CPU = torch.device("cpu")


def import_benchmarks():
    """bench_vs_reference, reference_work and their sibling modules that hold the image shape;
    benchmarks/parity has another ``common``, and whichever was imported first would serve both."""
    shadowed = sys.modules.pop("common", None)
    sys.path.insert(0, str(BENCHMARKS))
    names = ("bench_vs_reference", "reference_work", "common", "bench_mtt_syn_steps")
    try:
        return tuple(importlib.import_module(name) for name in names)
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("common", None)
        if shadowed is not None:
            sys.modules["common"] = shadowed


bench, work, *SHAPED = import_benchmarks()


@pytest.fixture
def fake_reference(monkeypatch: pytest.MonkeyPatch):
    """The stand-in reference modules, importable for one test only; their device log."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # reference_module prepends the folder
    names = ("utils", "dc_utils", "reparam_module")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    utils = work.reference_module(FAKE, "utils")
    yield utils.SEEN
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def small_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """8x8 images instead of CIFAR's 32x32 (the work, and the test, 16 times smaller)."""
    for module in (work, *SHAPED):
        monkeypatch.setattr(module, "SHAPE", (3, 8, 8))


@pytest.fixture
def forward_devices():
    """Every module that runs forward: (its type, devices of its parameters and inputs)."""
    calls: list[tuple[type, set[torch.device]]] = []

    def record(module: nn.Module, inputs: tuple) -> None:
        tensors = [*module.parameters(recurse=False), *inputs]
        calls.append((type(module), {t.device for t in tensors if isinstance(t, torch.Tensor)}))

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    yield calls
    handle.remove()


def test_a_device_the_machine_lacks_is_refused_in_one_line() -> None:
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "src")}
    script = BENCHMARKS / "bench_vs_reference.py"
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cuda", "--items", "dm", "--vico", str(FAKE)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: --device cuda: CUDA is not available here: use --device cpu or auto"
    ]


def test_device_names_are_checked_against_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench.available_device("auto") == torch.device("cuda")
    assert bench.available_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="1 CUDA device"):
        bench.available_device("cuda:1")
    with pytest.raises(ValueError, match="not a device name"):
        bench.available_device("gpu")
    with pytest.raises(ValueError, match="only CPU and CUDA"):
        bench.available_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.available_device("auto") == CPU


def test_a_reference_network_goes_to_the_requested_device_alone(
    fake_reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    utils = work.reference_module(FAKE, "utils")
    net = work.reference_net(utils, torch.device("meta"))
    assert not isinstance(net, nn.DataParallel)
    assert {p.device for p in net.parameters()} == {torch.device("meta")}
    assert torch.cuda.device_count() == 2  # hidden only while get_network ran


def test_every_side_of_every_item_runs_on_the_requested_device(
    fake_reference, small_images, forward_devices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    args = SimpleNamespace(vico=FAKE, idm=FAKE, per_class=2, inner_epochs=1, compile=False)
    args.device = CPU
    pairs = work.build(["dc_match", "dc_inner", "dsa_match", "dsa_inner", "dm", "idm"], args)
    for sides in pairs.values():
        assert set(sides) == {"reference", "rdd"}
        for run in sides.values():
            run()
    for side in ("reference", "rdd"):
        work.mtt_once(side, FAKE, syn_steps=1, batch_syn=10, device=CPU)
    kinds = {kind for kind, _ in forward_devices}
    assert work.reference_module(FAKE, "reparam_module").ReparamModule in kinds  # MTT's ran
    assert nn.DataParallel not in kinds
    assert set().union(*(devices for _, devices in forward_devices)) == {CPU}
    assert fake_reference and set(fake_reference) == {CPU}  # the reference's tensors, args


def test_timing_waits_for_the_gpu_before_reading_the_clock(monkeypatch) -> None:
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(device))
    work.timed(lambda: events.append("work"), torch.device("cuda:1"))
    assert events == [torch.device("cuda:1"), "work", torch.device("cuda:1")]
    events.clear()
    work.timed(lambda: events.append("work"), CPU)
    assert events == ["work"]


def test_mtt_subprocesses_get_the_device_and_report_gpu_memory(monkeypatch) -> None:
    commands = []

    def run(cmd, **kwargs):
        commands.append(cmd)
        figures = {"seconds": 2.0, "peak_mib": 100.0, "rise_mib": 50.0}
        figures |= {"gpu_peak_mib": 40.0, "gpu_rise_mib": 20.0}
        return SimpleNamespace(stdout=json.dumps(figures) + "\n")

    monkeypatch.setattr(bench.subprocess, "run", run)
    args = SimpleNamespace(syn_steps=[3], repeats=2, mtt=FAKE, batch_syn=10)
    args.device, args.host_memory, args.mtt_warmup = torch.device("cuda:1"), "own", "full"
    rows = bench.mtt_rows(args)
    assert len(commands) == 4
    assert all(cmd[cmd.index("--device") + 1] == "cuda:1" for cmd in commands)
    # Each side allocates as its own code does: rdd keeps freed host memory, the reference not.
    for cmd in commands:
        side = cmd[cmd.index("--mtt-one") + 1]
        assert ("--keep-host-memory" in cmd) == (side == "rdd")
    commands.clear()
    args.host_memory = "kept"
    bench.mtt_rows(args)
    assert all("--keep-host-memory" in cmd for cmd in commands)
    assert (
        rows[-1]
        == "| MTT peak GPU memory (rise), syn_steps 3 | 40 MiB (20) | 40 MiB (20) | 1.00 (1.00) |"
    )


def test_isolated_sides_each_run_in_a_process_of_their_own(monkeypatch) -> None:
    """--isolate: one subprocess per (item, side, repeat), the order of the sides reversed
    every other repeat, each told its side, the reference paths and the host-memory mode."""
    commands = []

    def run(cmd, **kwargs):
        commands.append(cmd)
        return SimpleNamespace(stdout=json.dumps({"seconds": float(len(commands))}) + "\n")

    monkeypatch.setattr(bench.subprocess, "run", run)
    args = SimpleNamespace(repeats=2, compile=True, per_class=2, inner_epochs=1, warmup=1)
    args.device, args.host_memory, args.vico, args.idm = CPU, "own", FAKE, None
    times = bench.isolated(["dm"], args)
    sides = [cmd[cmd.index("--one") + 1] for cmd in commands]
    assert sides == ["dm:reference", "dm:rdd", "dm:rdd+compile"] + [
        "dm:rdd+compile",
        "dm:rdd",
        "dm:reference",
    ]
    assert all(cmd[cmd.index("--vico") + 1] == str(FAKE) and "--idm" not in cmd for cmd in commands)
    assert times == {"dm": {"reference": [1.0, 6.0], "rdd": [2.0, 5.0], "rdd+compile": [3.0, 4.0]}}


@pytest.mark.parametrize(
    ("side", "mode", "kept"),
    [("reference", "own", False), ("rdd", "own", True), ("rdd+compile", "own", True)]
    + [("reference", "kept", True)],
)
def test_an_isolated_side_allocates_as_its_own_code_does(monkeypatch, side, mode, kept) -> None:
    """rdd's sides keep freed host memory, as rdd.run does by default; the reference gives it
    back unless --host-memory kept; the side runs once untimed, then once timed."""
    calls = []
    monkeypatch.setattr(bench, "keep_freed_host_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(
        work, "build", lambda items, args: {"dm": {side: lambda: calls.append(args.compile) or 2.5}}
    )
    args = SimpleNamespace(one=f"dm:{side}", host_memory=mode, warmup=1, compile=False)
    assert bench.one_side(args) == {"seconds": 2.5}
    assert calls == ["keep"] * kept + [side == "rdd+compile"] * 2
