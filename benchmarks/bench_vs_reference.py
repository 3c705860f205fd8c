"""rdd against the reference implementations, side by side in one process: time ratios.

Each work item runs the same work on the same kind of inputs in rdd and in the reference, one
after the other, repeated; the order alternates (reference first in even repeats, rdd first in
odd ones) so both see the same load, and the median of the repeats is reported. Setting: the
published CIFAR-10 IPC 10 one, on random CIFAR-shaped tensors (timing does not depend on pixel
values): ConvNet-3 width 128 (instance norm, avg pool), 10 classes of 3x32x32, IPC 10, 256
real images per class per batch, SGD on the images with momentum 0.5.

Work items (``--items``):

* ``dc_match`` / ``dsa_match``: one matching step + image update of DC / DSA: per class the
  real and the synthetic gradient and the layer-wise distance, then one SGD step on the images.
  Reference: the body of VICO-UoE/DatasetCondensation main.py's outer loop (its ``match_loss``,
  ``DiffAugment`` with a per-class seed, followed inline); rdd: ``GradientMatching.class_losses``
  and the learner's image step, as ``step`` runs them. Both on the same network weights.
* ``dc_inner`` / ``dsa_inner``: the network update between matching steps, ``--inner-epochs``
  epochs (published: 50) on the 100 synthetic images, batch 256, plain SGD lr 0.01.
  Reference: main.py's ``DataLoader`` + ``utils.epoch``; rdd: ``GradientMatching.train_net``.
* ``dm``: one DM iteration (a fresh network, every class's DSA'd real and synthetic mean
  embedding, one image step, lr 1). Reference: main_DM.py's loop body (its ``get_network``).
* ``idm``: one IDM iteration with the published CIFAR-10 IPC 10 settings (2x2 expansion,
  DSA, CE weight 0.5 x running accuracy, one queue network for matching, images stepped per
  class, then 2 queue networks x 10 SGD steps on 256 real images; no push in timed
  iterations). Reference: uitrbn/IDM IDM_cifar10.py's loop body on its ``dc_utils`` /
  ``dc_networks`` (followed inline; its torchnet accuracy meter, not installed here, replaced
  by a running count of correct predictions, which is what ClassErrorMeter keeps).
  Both run one untimed iteration first (queue set-up).
* ``mtt``: one MTT iteration per ``--syn-steps`` value (DSA, ``--batch-syn`` images per
  student step, expert_epochs 2, a random expert). Reference: GeorgeCazenavette/mtt-distillation
  distill.py's loop body on its ``ReparamModule``/``ConvNet``/``DiffAugment``; rdd:
  ``TrajectoryMatching.step``. Each (implementation, syn_steps, repeat) runs in a subprocess of
  its own, which first takes an untimed iteration of the same ``syn_steps`` (``--mtt-warmup``:
  the state the second and every later iteration of a run sees), then times one iteration.
  Host memory (``--host-memory``): each subprocess allocates as its own code leaves it, so
  the rdd side keeps freed host memory (``trainer.keep_host_memory``, true by default in
  rdd.run: rdd.utils.host_memory) and the reference gives it back to the system, as
  mtt-distillation's distill.py does; ``kept`` gives the reference rdd's setting too (what
  the setting alone is worth). The other items share one process, and with it rdd's setting.
  Memory, per subprocess: "peak RSS" is its peak resident set size (``ru_maxrss``), "rise" the
  peak minus the resident size just before the timed iteration (data, net and expert loaded).
  On the CPU that is the work's memory; on a GPU it is host memory only (the CUDA context and
  libraries included, the tensors not), and a second row gives the GPU's: "peak GPU memory"
  is ``torch.cuda.max_memory_allocated`` (tensors held by the caching allocator at their
  peak, over the whole subprocess; not its cached free blocks, nor the context), "rise" that
  peak minus ``memory_allocated`` just before the timed iteration.

Device (``--device``: cpu, the default, cuda, cuda:N or auto, the GPU where there is one):
both sides of every item run there: real and synthetic images, labels, networks (the
reference's, and rdd's learner and networks), the reference's ``args.device``, and the MTT
subprocesses, which get the same ``--device``. The references' ``get_network`` picks 'cuda'
itself whenever CUDA has devices (and DataParallel on several); the benchmark hides the GPUs
from it at run time and moves its network to the chosen device, as the published scripts'
``get_network(...).to(args.device)`` does on one GPU (``reference_work.reference_net``; the
checkouts are not edited). So several GPUs time the single-GPU path of the references. On a
GPU every timed run synchronises (``torch.cuda.synchronize``) before it reads the clock, at
its start and at its end, so that queued kernels are counted. A device this machine lacks
(``--device cuda`` without CUDA) stops the script at once: one line ``error: ...``, exit 2.

Usage (checkouts of the references outside this repository; nothing of them is copied here;
``<mirrors>``: a folder of bare git mirrors of the references, ``<owner>+<name>/repo``):

    git --git-dir=<mirrors>/VICO-UoE+DatasetCondensation/repo archive HEAD | tar -x -C /tmp/ref/vico
    for m in uitrbn+IDM:idm GeorgeCazenavette+mtt-distillation:mtt; do
        g=<mirrors>/${m%%:*}/repo; for f in $(git --git-dir=$g ls-tree --name-only HEAD | grep .py$); do
        git --git-dir=$g show HEAD:$f > /tmp/ref/${m##*:}/$f; done; done
    python benchmarks/bench_vs_reference.py --vico /tmp/ref/vico --idm /tmp/ref/idm \
        --mtt /tmp/ref/mtt [--items dc_match,dsa_match,...] [--repeats 3] [--inner-epochs 50] \
        [--syn-steps 20,30] [--batch-syn 100] [--per-class 256] [--compile] [--device cuda]

Isolation (``--isolate``): the DC/DSA/DM/IDM items run in this process by default, one after
the other, so both sides share its allocator and get rdd's setting (kept freed host memory):
a comparison of the code alone. With ``--isolate`` each (item, side, repeat) runs in a
subprocess of its own, as MTT's always do (one untimed run first, ``--warmup`` for the
compiled side, then one timed run), so that each side allocates as its own code does: what a
user gets from rdd.run against what the reference's script gets.

``--compile`` adds a third side to the DC/DSA/DM/IDM items, rdd with
``matching.compile_nets=true`` (``rdd.nets.compiled``), interleaved with the other two; it gets
``--warmup`` untimed runs first (the compilation). MTT has no compiled side: its unroll is
differentiated twice, which torch.compile does not support.

Patches to the references' files: none needed on torch 2.14 for the code paths used here
(VICO's ``networks.py`` ``.view`` calls see contiguous inputs; MTT's ``utils.py`` imports
kornia and torchvision, both installed); at run time, only ``get_network``'s view of the GPUs
(Device above). Each reference's ``get_network`` reseeds the global generator
from the wall clock; its weights do not change the timing, and where they are shared (DC/DSA
items) rdd's seeded weights are copied in.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import reference_work as work
import torch
from common import add_device_argument, available_device, machine

from rdd.utils.host_memory import keep_freed_host_memory

ALL_ITEMS = ("dc_match", "dc_inner", "dsa_match", "dsa_inner", "dm", "idm", "mtt")


def interleaved(pairs: dict, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Seconds of each side of each item per repeat; the order of the sides is reversed in
    every other repeat."""
    times = {item: {side: [] for side in sides} for item, sides in pairs.items()}
    for r in range(repeats):
        for item, sides in pairs.items():
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for side in order:
                times[item][side].append(sides[side]())
                print(f"  {item} {side} repeat {r}: {times[item][side][-1]:.2f} s", flush=True)
    return times


def isolated(items: list[str], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """``--isolate``: seconds of each side of each item per repeat, every one measured in a
    subprocess of its own (``--one``), interleaved as :func:`interleaved` does, so that each
    side allocates host memory as its own code does (rdd keeps it, a reference gives it back)."""
    sides = ["reference", "rdd"] + (["rdd+compile"] if args.compile else [])
    times = {item: {side: [] for side in sides} for item in items}
    for r in range(args.repeats):
        for item in items:
            for side in sides if r % 2 == 0 else sides[::-1]:
                cmd = [sys.executable, __file__, "--one", f"{item}:{side}"]
                cmd += [
                    "--per-class",
                    str(args.per_class),
                    "--inner-epochs",
                    str(args.inner_epochs),
                ]
                cmd += ["--device", str(args.device), "--warmup", str(args.warmup)]
                cmd += ["--host-memory", args.host_memory]
                for key in ("vico", "idm"):
                    if getattr(args, key) is not None:
                        cmd += [f"--{key}", str(getattr(args, key))]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                times[item][side].append(
                    json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                )
                print(f"  {item} {side} repeat {r}: {times[item][side][-1]:.2f} s", flush=True)
    return times


def shared_process_times(items: list[str], args: argparse.Namespace) -> dict:
    """Every side of every item in this process, interleaved. They share its allocator, so
    both get rdd's setting: their ratios compare the code alone (a reference run alone would
    give its memory back; ``--isolate`` measures that)."""
    if items:
        keep_freed_host_memory()
    pairs = work.build(items, args)
    for item, sides in pairs.items():  # the compilation happens here
        for side, run in sides.items():
            for _ in range(args.warmup if side == "rdd+compile" else 0):
                print(f"  {item} {side} warm-up: {run():.2f} s", flush=True)
    return interleaved(pairs, args.repeats)


def one_side(args: argparse.Namespace) -> dict[str, float]:
    """``--one item:side``: build the item, run the side untimed (``--warmup`` times, at least
    once: the compilation, the allocator's steady state), then time one run."""
    item, side = args.one.split(":")
    if side != "reference" or args.host_memory == "kept":
        keep_freed_host_memory()  # what rdd.run does by default (trainer.keep_host_memory)
    args.compile = side == "rdd+compile"
    run = work.build([item], args)[item][side]
    for _ in range(max(1, args.warmup)):
        run()
    return {"seconds": run()}


def mtt_rows(args: argparse.Namespace) -> list[str]:
    """MTT: one subprocess per (side, syn_steps, repeat), interleaved as above."""
    rows = []
    for steps in args.syn_steps:
        runs: dict[str, list[dict]] = {"reference": [], "rdd": []}
        for r in range(args.repeats):
            for side in ["reference", "rdd"] if r % 2 == 0 else ["rdd", "reference"]:
                cmd = [sys.executable, __file__, "--mtt-one", side, "--mtt", str(args.mtt)]
                cmd += ["--syn-steps", str(steps), "--batch-syn", str(args.batch_syn)]
                cmd += ["--device", str(args.device), "--mtt-warmup", str(args.mtt_warmup)]
                if side == "rdd" or args.host_memory == "kept":
                    cmd += ["--keep-host-memory"]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"  mtt{steps} {side} repeat {r}: {runs[side][-1]}", flush=True)
        med = {s: {k: statistics.median(x[k] for x in v) for k in v[0]} for s, v in runs.items()}
        ref, ours = med["reference"], med["rdd"]
        rows.append(
            f"| MTT iteration, syn_steps {steps}, batch_syn {args.batch_syn} | "
            f"{ref['seconds']:.2f} s | {ours['seconds']:.2f} s | {ours['seconds'] / ref['seconds']:.2f} |"
        )
        rows.append(
            f"| MTT peak RSS (rise), syn_steps {steps} | {ref['peak_mib']:.0f} MiB "
            f"({ref['rise_mib']:.0f}) | {ours['peak_mib']:.0f} MiB ({ours['rise_mib']:.0f}) | "
            f"{ours['peak_mib'] / ref['peak_mib']:.2f} ({ours['rise_mib'] / ref['rise_mib']:.2f}) |"
        )
        if "faults" in ref:  # host pages faulted in during the timed iteration
            rows.append(
                f"| MTT page faults, syn_steps {steps} | {ref['faults'] / 1e3:.0f} k | "
                f"{ours['faults'] / 1e3:.0f} k | - |"
            )
        if "gpu_peak_mib" in ref:
            rows.append(
                f"| MTT peak GPU memory (rise), syn_steps {steps} | {ref['gpu_peak_mib']:.0f} MiB "
                f"({ref['gpu_rise_mib']:.0f}) | {ours['gpu_peak_mib']:.0f} MiB "
                f"({ours['gpu_rise_mib']:.0f}) | {ours['gpu_peak_mib'] / ref['gpu_peak_mib']:.2f} "
                f"({ours['gpu_rise_mib'] / ref['gpu_rise_mib']:.2f}) |"
            )
    return rows


def warmup_steps(value: str) -> str:
    if value != "full" and not (value.isdigit() and int(value) >= 1):
        raise argparse.ArgumentTypeError(f"full or a number of steps >= 1, got {value!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vico", type=Path, help="checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("--idm", type=Path, help="folder with uitrbn/IDM's .py files")
    parser.add_argument("--mtt", type=Path, help="folder with mtt-distillation's .py files")
    parser.add_argument("--items", default=",".join(ALL_ITEMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=256)
    parser.add_argument("--inner-epochs", type=int, default=50)
    parser.add_argument("--syn-steps", default="20,30")
    parser.add_argument("--batch-syn", type=int, default=100)
    parser.add_argument(
        "--compile", action="store_true", help="also time rdd with matching.compile_nets=true"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of rdd+compile first")
    add_device_argument(parser)
    parser.add_argument(
        "--host-memory",
        choices=("own", "kept"),
        default="own",
        help="own: each side's allocator as its own code leaves it (rdd keeps freed host memory, "
        "trainer.keep_host_memory's default; the references give it back); kept: the "
        "references keep it too",
    )
    parser.add_argument(
        "--mtt-warmup",
        type=warmup_steps,
        default="full",
        help="MTT's untimed iteration first: full (syn_steps, the steady state of a run) or N steps",
    )
    parser.add_argument("--mtt-one", choices=("reference", "rdd"), help="internal: one MTT run")
    parser.add_argument("--keep-host-memory", action="store_true", help="internal: MTT runs")
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="every (item, side, repeat) in a process of its own, as MTT always is",
    )
    parser.add_argument("--one", help="internal: one isolated run, item:side")
    args = parser.parse_args()
    try:
        args.device = available_device(args.device)
    except ValueError as err:  # one line, before any work: a traceback says no more
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    args.syn_steps = [int(s) for s in args.syn_steps.split(",")]
    if args.one:
        print(json.dumps(one_side(args)))
        return
    if args.mtt_one:
        steps = args.syn_steps[0]
        warmup = steps if args.mtt_warmup == "full" else int(args.mtt_warmup)
        one = work.mtt_once(
            args.mtt_one,
            args.mtt,
            steps,
            args.batch_syn,
            args.device,
            args.keep_host_memory,
            warmup,
        )
        print(json.dumps(one))
        return
    items = args.items.split(",")
    unknown = set(items) - set(ALL_ITEMS)
    if unknown:
        parser.error(f"unknown items {sorted(unknown)}: choose from {', '.join(ALL_ITEMS)}")
    needs = {"vico": {"dc_match", "dc_inner", "dsa_match", "dsa_inner", "dm"}, "idm": {"idm"}}
    needs["mtt"] = {"mtt"}
    for key, users in needs.items():
        if users & set(items) and getattr(args, key) is None:
            parser.error(f"--{key} is needed for {', '.join(sorted(users & set(items)))}")
    print(machine())
    print(f"items {items}, repeats {args.repeats}, warm-up {args.warmup}, compile {args.compile}")
    print(f"device {args.device} (both sides)")
    print(f"{args.per_class} real/class, IPC 10, inner epochs {args.inner_epochs}")
    print(
        f"host memory: {args.host_memory}, isolate: {args.isolate}, MTT warm-up: {args.mtt_warmup}"
    )
    in_process = [i for i in items if i != "mtt"]
    measure = isolated if args.isolate else shared_process_times
    times = measure(in_process, args)
    compiled = " | rdd+compile | ratio" if args.compile else ""
    rows = [f"| work | reference | rdd | rdd / reference{compiled} |"]
    rows.append("| --- " * (6 if args.compile else 4) + "|")
    for item, sides in times.items():
        med = {side: statistics.median(values) for side, values in sides.items()}
        label = work.LABELS[item].format(epochs=args.inner_epochs)
        ref, ours = med["reference"], med["rdd"]
        row = f"| {label} | {ref:.2f} s | {ours:.2f} s | {ours / ref:.2f}"
        if "rdd+compile" in med:
            row += f" | {med['rdd+compile']:.2f} s | {med['rdd+compile'] / ref:.2f}"
        rows.append(row + " |")
    if "mtt" in items:
        rows += mtt_rows(args)
    print(f"medians of {args.repeats} repeats, torch {torch.__version__}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
