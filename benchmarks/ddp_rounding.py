"""How far a robust DC run moves when its real gradients change at float-rounding level.

A 2-process DDP run sums each real batch's gradient in two halves and adds them; one process
sums it at once. The two differ in the last bits, and with the robust layer's shared images
the DDP run's synthetic set ends further from the single-process one (tests/parallel/
test_ddp.py: ~1e-4 after 2 DC iterations against ~1e-6 owned-only). This script asks whether
that is DDP's doing or the run's sensitivity: it runs the same config in one process with the
real gradients of gradient matching multiplied by (1 + eps * s), s a fixed random +-1 per
element (eps = 2^-bits), and prints the largest image difference from the unperturbed run,
next to the DDP run's. Each run is a subprocess of ``rdd.run`` on the embedded digits.

    PYTHONPATH=src python benchmarks/ddp_rounding.py --out /tmp/ddp_rounding [--bits 23,20,17]
"""

from __future__ import annotations

import argparse
import os
import runpy
import subprocess
import sys
from pathlib import Path

import torch

# The config of test_shared_images_ddp_iteration_equals_one_process, iterations set per row.
CONFIG = ["matching=dc", "risk=max_group", "clustering.k=2", "ipc=2", "eval.epochs=2"]
CONFIG += ["eval.num_nets=1", "logger=csv", "trainer.enable_progress_bar=false"]
ALLOCATIONS = {
    "shared": [],  # the default: groups own images only where the risk buys them
    "owned": ["robust.allocation.shared=false", "robust.allocation.min_images=1"],
}
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def perturbed_run(bits: int, overrides: list[str]) -> None:
    """rdd.run in this process, with every real gradient of gradient matching perturbed."""
    import rdd.matching.gradient as gradient
    import rdd.matching.robust as robust

    exact, eps = robust.real_gradient, 2.0**-bits
    signs = torch.Generator().manual_seed(123)

    def real_gradient(net, params, real, c):
        grads = exact(net, params, real, c)
        return [
            g * (1 + eps * (torch.randint(0, 2, g.shape, generator=signs) * 2 - 1)) for g in grads
        ]

    robust.real_gradient = gradient.real_gradient = real_gradient
    sys.argv = ["rdd.run", *overrides]
    runpy.run_module("rdd.run", run_name="__main__")


def run(out: Path, name: str, overrides: list[str], bits: int | None = None) -> Path:
    """One rdd.run (perturbed at 2^-bits if given) in a subprocess; its output folder."""
    folder = out / name
    if not (folder / "synset.pt").exists():
        command = [sys.executable, "-m", "rdd.run"]
        if bits is not None:
            command = [sys.executable, __file__, "--out", str(out), "--perturb", str(bits), "--"]
        command += [*overrides, f"hydra.run.dir={folder}"]
        # One thread, and oneDNN held to AVX2 as the test suite holds it (tests/conftest.py).
        env = os.environ | {"OMP_NUM_THREADS": "1", "DNNL_MAX_CPU_ISA": "AVX2"}
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return folder


def largest_difference(a: Path, b: Path) -> float:
    from rdd.synset import SyntheticSet

    images = [SyntheticSet.load(folder / "synset.pt").images for folder in (a, b)]
    return float((images[0] - images[1]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs (reused)")
    parser.add_argument("--bits", default="23,20,17", help="perturbation sizes 2^-bits")
    parser.add_argument("--iterations", default="1,2")
    parser.add_argument("--perturb", type=int, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.perturb is not None:
        perturbed_run(args.perturb, args.overrides)
        return
    bits = [int(b) for b in args.bits.split(",")]
    print("| allocation | iterations | DDP 2 ranks | " + " | ".join(f"2^-{b}" for b in bits) + " |")
    print("| --- | --- | --- |" + " --- |" * len(bits))
    for allocation, extra in ALLOCATIONS.items():
        for iterations in args.iterations.split(","):
            config = [*CONFIG, *extra, f"matching.iterations={iterations}"]
            tag = f"{allocation}_it{iterations}"
            base = run(args.out, f"{tag}_single", config)
            cells = [largest_difference(base, run(args.out, f"{tag}_ddp", [*DDP, *config]))]
            cells += [
                largest_difference(base, run(args.out, f"{tag}_eps{b}", config, b)) for b in bits
            ]
            row = " | ".join(f"{c:.1e}" for c in cells)
            print(f"| {allocation} | {iterations} | {row} |", flush=True)


if __name__ == "__main__":
    main()
