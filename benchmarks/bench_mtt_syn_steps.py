"""Wall time per MTT iteration and peak memory as a function of ``syn_steps``.

Setting (the published CIFAR-10 IPC 10 command): ConvNet-3 width 128 (instance norm, avg
pool), IPC 10, 10 classes, 3x32x32 images, every student step on the whole synthetic set
(batch_syn = 100) with DSA, expert_epochs 2. The expert trajectory is random (timing does not
depend on parameter values); the matcher runs directly, outside Lightning, so a figure is the
algorithm's cost. Each syn_steps value runs in its own process, so its peak memory is its own.

    python benchmarks/bench_mtt_syn_steps.py --syn-steps 5,10,20,30 [--iterations 3] [--device cpu]

Time: mean over the iterations after the first. Memory: the process's peak resident set size
(ru_maxrss) on CPU; torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import (
    NUM_CLASSES,
    SHAPE,
    cifar_shaped,
    machine,
    peak_rss_mib,
    plain_learner,
    time_steps,
)

from rdd.experts import Trajectories
from rdd.matching.trajectory import TrajectoryMatching
from rdd.nets import build_net


def random_expert(folder: Path, epochs: int) -> Trajectories:
    """One expert of random snapshots with ConvNet-3 w128's parameter count."""
    net = build_net("convnet", SHAPE[0], NUM_CLASSES, SHAPE[1:])
    size = sum(p.numel() for p in net.parameters())
    params = torch.randn(epochs + 1, size, generator=torch.Generator().manual_seed(0)) * 0.05
    path = folder / "expert_00000.pt"
    torch.save({"format": "rdd-expert/1", "params": params, "names": []}, path)
    return Trajectories([path])


def measure(syn_steps: int, iterations: int, ipc: int, device: str) -> str:
    """One line: syn_steps, seconds per iteration, peak memory in MiB."""
    real_x, real_y = cifar_shaped(ipc)
    matcher = TrajectoryMatching(syn_steps=syn_steps, expert_epochs=2, max_start_epoch=2)
    with tempfile.TemporaryDirectory() as folder:
        matcher.attach(random_expert(Path(folder), epochs=4))
        learner = plain_learner(matcher, real_x.clone(), real_x, real_y, ipc).to(device)
        times = time_steps(matcher, learner, iterations)
    steady = times[1:] or times
    if device.startswith("cuda"):
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = peak_rss_mib()
    return f"{syn_steps}\t{sum(steady) / len(steady):.2f}\t{memory:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syn-steps", default="5,10,20,30")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", action="store_true", help="internal: measure one value here")
    args = parser.parse_args()
    steps = [int(s) for s in args.syn_steps.split(",")]
    if args.one:
        print(measure(steps[0], args.iterations, args.ipc, args.device))
        return
    print(machine())
    print(
        f"MTT, ConvNet-3 w128, IPC {args.ipc}, batch_syn {NUM_CLASSES * args.ipc}, DSA, {args.device}"
    )
    print("syn_steps\tseconds/iteration\tpeak MiB")
    for n in steps:
        cmd = [sys.executable, __file__, "--one", "--syn-steps", str(n)]
        cmd += [
            "--iterations",
            str(args.iterations),
            "--ipc",
            str(args.ipc),
            "--device",
            args.device,
        ]
        print(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip(),
            flush=True,
        )


if __name__ == "__main__":
    main()
