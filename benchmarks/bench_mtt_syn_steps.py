"""Wall time per MTT iteration and peak memory against ``syn_steps``, per ``matching.memory``.

Setting (the published CIFAR-10 IPC 10 command): ConvNet-3 width 128 (instance norm, avg
pool), IPC 10, 10 classes, 3x32x32 images, every student step on the whole synthetic set
(batch_syn = 100; ``--batch-syn`` for fewer) with DSA, expert_epochs 2. The expert trajectory
is random (timing does not depend on parameter values); the matcher runs directly, outside
Lightning, so a figure is the algorithm's cost. Each (syn_steps, memory) pair runs in its own
process, so its peak memory is its own; the pairs run one after the other, full and constant
alternating, so their time ratio is measured under the same load.

    python benchmarks/bench_mtt_syn_steps.py --syn-steps 2,10,30 --memory full,constant \
        [--iterations 3] [--batch-syn 100] [--device cpu]

Time: mean over the iterations after the first. Memory on CPU: the process's peak resident
set size (ru_maxrss), and its rise over the resident size just before the first iteration
(data, net and expert loaded: what the iterations themselves needed); glibc hands large
tensors back to the system when they are freed, so the peak follows the live tensors. On a
GPU: torch.cuda.max_memory_allocated, and its rise over the allocation before the iterations.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import (
    NUM_CLASSES,
    SHAPE,
    add_device_argument,
    cifar_shaped,
    machine,
    peak_mib,
    plain_learner,
    resolve_device,
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


def rss_mib() -> float:
    """The resident set size now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(syn_steps: int, memory: str, args: argparse.Namespace) -> str:
    """One row: syn_steps, memory, seconds per iteration, peak MiB, its rise over the start."""
    real_x, real_y = cifar_shaped(args.ipc)
    matcher = TrajectoryMatching(
        syn_steps=syn_steps,
        expert_epochs=2,
        max_start_epoch=2,
        batch_syn=args.batch_syn,
        memory=memory,
    )
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as folder:
        matcher.attach(random_expert(Path(folder), epochs=4))
        learner = plain_learner(matcher, real_x.clone(), real_x, real_y, args.ipc)
        learner = learner.to(device)
        before = torch.cuda.memory_allocated(device) / 2**20 if cuda else rss_mib()
        times = time_steps(matcher, learner, args.iterations)
    steady = times[1:] or times
    peak = peak_mib(device)
    seconds = sum(steady) / len(steady)
    return f"| {syn_steps} | {memory} | {seconds:.2f} | {peak:.0f} | {peak - before:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syn-steps", default="2,10,30")
    parser.add_argument("--memory", default="full,constant")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-syn", type=int, default=None, help="default: the whole set")
    add_device_argument(parser)
    parser.add_argument("--one", action="store_true", help="internal: measure one pair here")
    args = parser.parse_args()
    steps = [int(s) for s in args.syn_steps.split(",")]
    memories = args.memory.split(",")
    if args.one:
        print(measure(steps[0], memories[0], args))
        return
    print(machine())
    batch = args.batch_syn or NUM_CLASSES * args.ipc
    print(f"MTT, ConvNet-3 w128, IPC {args.ipc}, batch_syn {batch}, DSA, {args.device}")
    print("| syn_steps | memory | seconds / iteration | peak MiB | rise MiB |")
    print("| --- | --- | --- | --- | --- |")
    for n in steps:
        for memory in memories:
            cmd = [sys.executable, __file__, "--one", "--syn-steps", str(n), "--memory", memory]
            cmd += ["--iterations", str(args.iterations), "--ipc", str(args.ipc)]
            cmd += ["--device", args.device]
            cmd += ["--batch-syn", str(args.batch_syn)] if args.batch_syn else []
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
