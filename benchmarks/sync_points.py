"""Host-device synchronisation points of one distillation iteration, per method and risk.

A GPU runs ahead of Python only while Python asks nothing of it. A call that reads a device
value on the host (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``, ``.cpu()``), that needs
a device value to know a shape (``nonzero``, a boolean mask index, ``unique``), or a blocking
copy of host data to the device (``t.to(device)`` without ``non_blocking`` from pinned memory,
``torch.tensor(data, device=...)``, a CPU index into a device tensor: CUDA's copy waits for the
stream) makes the host wait for every queued kernel. :class:`SyncCounter` records each with
its Python call site.

On a CPU every tensor lives on the host, so the counter tracks what *would* live on the device
(emulation): a tensor is "host" when it comes from the run's CPU generator (``generator=``), a
factory without ``device=``, ``.cpu()``, or ops on host tensors only; the learner's CPU
bookkeeping (labels, subgroup table, class index) is marked host when counting starts; every
other tensor (images, real data, networks, gradients) is "device". With ``--device cuda`` the
tensors' real devices decide, and ``torch.cuda.set_sync_debug_mode("warn")`` counts what CUDA
itself reports as synchronising.

    python benchmarks/sync_points.py [--methods dc,dsa,dm,idm,mtt] [--risks none,cvar] \
        [--device cpu|cuda] [--iterations 2] [--sites] [--out FILE.json]

One tiny run per (method, risk) through ``rdd.run.distill`` (digits 16x16, IPC 2, the
``tests/test_determinism.py`` budgets), counting inside ``matcher.step`` only; the figure per
iteration is the last iteration's (the first one also clusters, for a robust risk).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
import warnings
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

HERE = Path(__file__).resolve()

# Tensor methods / functions that read device data back on the host.
D2H = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__complex__"}
D2H |= {"numpy", "__array__", "__repr__", "__str__", "__format__", "equal", "allclose"}
# ... that need a device value to know their output's shape.
SHAPE = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}
SHAPE |= {"repeat_interleave", "histc", "nonzero_static"}
# Factories: no tensor input; on the host unless given device=.
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "linspace"}
FACTORIES |= {"rand", "randn", "randint", "randperm", "eye", "normal", "logspace", "scalar_tensor"}
COPY_FACTORIES = {"tensor", "as_tensor"}  # with device=: a copy of host data


def tensors_in(value) -> Iterable[torch.Tensor]:
    """Every tensor in a (nested) argument."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


def call_site() -> str:
    """The innermost frame of rdd (or of a benchmark) that made the call."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path == HERE or "torch" in path.parts or "lightning" in path.parts:
            continue
        parts = path.parts
        name = (
            "/".join(parts[len(parts) - parts[::-1].index("rdd") - 1 :])
            if "rdd" in parts
            else path.name
        )
        return f"{name}:{frame.lineno} ({frame.name})"
    return "?"


@dataclass
class Event:
    kind: str  # d2h (a value read back), shape (data-dependent shape), h2d (blocking copy)
    op: str
    site: str


class SyncCounter(TorchFunctionMode):
    """Records every call that would synchronise the host with ``device``.

    Args:
        device: where the run computes; ``cpu`` emulates a device by provenance (module doc).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.events: list[Event] = []
        self.emulate = self.device.type == "cpu"
        # Emulation: the tensors on the host, by id (a WeakSet would compare tensors with ==).
        self.host: dict[int, weakref.ref] = {}

    def mark_host(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            key = id(t)
            self.host[key] = weakref.ref(t, lambda _, key=key: self.host.pop(key, None))

    def on_device(self, t: torch.Tensor) -> bool:
        if self.emulate:
            ref = self.host.get(id(t))
            return ref is None or ref() is not t
        return t.device.type != "cpu"

    def record(self, kind: str, op: str) -> None:
        self.events.append(Event(kind, op, call_site()))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = list(tensors_in((args, kwargs)))
        target = self.copy_target(name, args, kwargs)
        self.check(name, args, kwargs, inputs, target)
        out = func(*args, **kwargs)
        if self.emulate and target == "device" and out is args[0]:
            out = out.view_as(out)  # a CPU .to(cpu) returns its input: the copy is a new tensor
        if self.emulate:
            self.propagate(name, kwargs, inputs, target, out)
        return out

    # -- what a call would cost on the device -------------------------------------------------
    @staticmethod
    def copy_target(name: str, args, kwargs) -> str | None:
        """For .to/.cpu/.cuda: 'host' or 'device' (None: not a copy, or a dtype cast)."""
        if name == "cpu":
            return "host"
        if name == "cuda":
            return "device"
        if name != "to":
            return None
        for value in [*args[1:], kwargs.get("device")]:
            if isinstance(value, str):
                return "host" if value == "cpu" else "device"
            if isinstance(value, torch.device):
                return "device"  # in rdd a device object is the run's device
            if isinstance(value, torch.Tensor):
                return "like"
        return None

    def check(self, name, args, kwargs, inputs, target) -> None:
        device_inputs = [t for t in inputs if self.on_device(t)]
        if name in D2H or name in SHAPE:
            if device_inputs:
                self.record("d2h" if name in D2H else "shape", name)
            return
        if name == "__set__" and self.emulate and len(args) == 2:  # t.data = value
            if isinstance(args[1], torch.Tensor) and self.on_device(args[1]):
                self.host.pop(id(args[0]), None)
            return
        if name in ("__getitem__", "__setitem__", "index_put", "index_put_"):
            if not args or not self.on_device(args[0]):
                return
            index = list(tensors_in(args[1:2]))
            if any(t.dtype == torch.bool and self.on_device(t) for t in index):
                self.record("shape", f"{name}[bool mask]")
            elif any(not self.on_device(t) and t.dim() > 0 for t in index):
                self.record("h2d", f"{name}[host index]")
            return
        if target is not None:
            source = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if source is None:
                return
            if target == "host" and self.on_device(source):
                self.record("d2h", name)
            elif target == "device" and not self.on_device(source):
                pinned = self.emulate or source.is_pinned()
                if not (kwargs.get("non_blocking") and pinned):
                    self.record("h2d", name)
            return
        # torch.tensor(data, device=...): a copy of host data, unless it is device tensors
        from_host = not inputs or not all(map(self.on_device, inputs))
        if name in COPY_FACTORIES and kwargs.get("device") not in (None, "cpu") and from_host:
            self.record("h2d", f"{name}(device=)")

    def propagate(self, name, kwargs, inputs, target, out) -> None:
        """Emulation: mark the outputs host where a GPU run would keep them on the host."""
        if target == "host" or kwargs.get("generator") is not None:
            host = True
        elif target in ("device", "like"):
            host = False
        elif not inputs:
            host = name in FACTORIES and kwargs.get("device") in (None, "cpu")
        else:
            host = not any(self.on_device(t) for t in inputs)
        if host:
            self.mark_host(*tensors_in(out))


def host_bookkeeping(learner) -> list[torch.Tensor]:
    """The learner's CPU-side tensors: labels, the subgroup table, the class index, and with
    subgroups owning images every group's members and the images' owners."""
    pool = learner.pool
    owned = [] if learner.ownership is None else [learner.ownership.owners]
    return [learner.real_y, pool.labels, pool.groups, *pool.index.members, *pool.members, *owned]


# -- one tiny run per (method, risk) ---------------------------------------------------------
EXTRA = {  # tests/test_determinism.py's budgets (one or two iterations at ipc 2)
    "idm": ["matching.train_steps=1", "matching.fetch_nets=2", "matching.queue_size=2"],
    "mtt": ["matching.syn_steps=2", "matching.expert_epochs=1", "matching.max_start_epoch=1"],
}
BUFFER = ["matching=mtt", "matching.max_start_epoch=1", "experts.num_experts=1", "experts.epochs=2"]


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rdd.config.compose import CONF_DIR
    from rdd.config.schemas import register_schemas

    register_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


def accelerator(device: torch.device) -> list[str]:
    return ["trainer.accelerator=" + ("cpu" if device.type == "cpu" else "gpu")]


def make_buffer(root: Path, device: torch.device) -> None:
    from rdd.experts.training import make_buffer as build

    build(compose("buffer", [*BUFFER, f"experts.root={root}", *accelerator(device)]))


def overrides_for(method: str, risk: str, iterations: int, out: Path, device, buffer) -> list[str]:
    settings = ["ipc=2", f"matching={method}", f"matching.iterations={iterations}", f"risk={risk}"]
    settings += ["logger=none", "checkpoint_every=0", "trainer.enable_progress_bar=false"]
    settings += [*EXTRA.get(method, []), f"paths.output_dir={out}", *accelerator(device)]
    if risk != "none":  # two subgroups per class: each owns one of the IPC 2 images
        settings += ["clustering.k=2"]
    if method == "mtt":
        settings += ["experts.num_experts=1", "experts.epochs=2", f"experts.root={buffer}"]
        if risk != "none":  # robust experts are another buffer; the risk acts on matching
            settings += ["robust.targets=[matching]"]
    return settings


def count_run(method: str, risk: str, args, out: Path, buffer: Path) -> dict:
    """Distil with the counter inside matcher.step; per-iteration events and the set."""
    from rdd.run import distill, prepare

    device = torch.device(args.device)
    prepared = prepare(
        compose("run", overrides_for(method, risk, args.iterations, out, device, buffer))
    )
    matcher = prepared.matcher
    step = matcher.step
    per_iteration: list[list[Event]] = []
    cuda_warnings: list[list[str]] = []

    current: list = [None]

    def counted(ctx):
        counter = current[0] = SyncCounter(torch.device(args.device))
        if not per_iteration and counter.emulate:
            wrap_copies(matcher, ctx, current)
        counter.mark_host(*host_bookkeeping(ctx))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with counter:
                    return step(ctx)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
                per_iteration.append(counter.events)
                cuda_warnings.append(
                    [
                        f"{Path(w.filename).name}:{w.lineno}"
                        for w in caught
                        if "synchroniz" in str(w.message)
                    ]
                )

    matcher.step = counted
    images, _, _ = distill(prepared)
    last = per_iteration[-1]
    result = {
        "method": method,
        "risk": risk,
        "syncs_per_iteration": [len(events) for events in per_iteration],
        "by_kind": dict(Counter(e.kind for e in last)),
        "sites": dict(Counter(f"{e.kind} {e.op} @ {e.site}" for e in last).most_common()),
        "first_iteration_sites": dict(
            Counter(f"{e.kind} {e.op} @ {e.site}" for e in per_iteration[0]).most_common()
        ),
        "images_sum": float(images.double().sum()),
        "images_hash": hash_tensor(images),
    }
    if device.type == "cuda":
        result["cuda_sync_warnings_per_iteration"] = [len(w) for w in cuda_warnings]
        result["cuda_sync_sites"] = dict(Counter(cuda_warnings[-1]).most_common())
    return result


def wrap_copies(matcher, ctx, current: list) -> None:
    """Emulation: what comes from the CPU outside the tracked calls, so that moving it to the
    device counts: expert snapshots and freshly built networks (made on the CPU) are marked
    host; ``t.data = <device tensor>`` (what Module.to does) then puts ``t`` on the device."""
    trajectories = getattr(matcher, "trajectories", None)
    if trajectories is not None:
        snapshot = trajectories.snapshot

        def host_snapshot(*args, **kwargs):
            out = snapshot(*args, **kwargs)
            current[0].mark_host(out)
            return out

        trajectories.snapshot = host_snapshot
    make_net = ctx.make_net

    def host_net():
        net = make_net()
        current[0].mark_host(*net.parameters(), *net.buffers())
        return net

    ctx.make_net = host_net


def hash_tensor(t: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dc,dsa,dm,idm,mtt")
    parser.add_argument("--risks", default="none,cvar")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--sites", action="store_true", help="print every call site")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    from rdd.run import quiet_lightning

    quiet_lightning()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        buffer = Path(tmp) / "buffers"
        methods = args.methods.split(",")
        if "mtt" in methods:
            make_buffer(buffer, torch.device(args.device))
        print(
            f"sync points per iteration ({args.device}; the last of {args.iterations} iterations)"
        )
        print("| method | risk | syncs / iteration | d2h | shape | h2d | first iteration |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for method in methods:
            for risk in args.risks.split(","):
                row = count_run(method, risk, args, Path(tmp) / f"{method}-{risk}", buffer)
                results.append(row)
                kinds = row["by_kind"]
                counts = row["syncs_per_iteration"]
                cells = [
                    method,
                    risk,
                    counts[-1],
                    *(kinds.get(k, 0) for k in ("d2h", "shape", "h2d")),
                ]
                print("| " + " | ".join(str(c) for c in [*cells, counts[0]]) + " |", flush=True)
                if args.sites:
                    for site, n in row["sites"].items():
                        print(f"      {n:4d}  {site}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
