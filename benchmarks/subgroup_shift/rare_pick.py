"""How many classes start with a real image of their rare subgroup represented, by the rule
that picks a class's candidate rare cluster (``clustering.rare_pick``) and the bound under
which a group counts as rare (``robust.allocation.rare_below``).

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/subgroup_shift/rare_pick.py \\
        <cifar10 root> > benchmarks/subgroup_shift/rare_pick.txt

For CIFAR-10 with 5 % of every class altered (grayscale, invert, blur), the default clusterer
(``style_error``, ``shape=auto``, k = 5, the run's pool of 256 per class) is fitted per seed
with each ``rare_pick`` as a run fits it, every training image is assigned, and each class's
groups get the images of the first, size-based allocation under ``risk=cvar`` with each
``rare_below`` (the images ``represent`` keeps as real starts;
``rdd.robust.ownership.allocate_class``). Printed per rule, as a mean per class: the
represented images, and the altered images among their starts expected from a uniform draw
(each represented image times its group's altered share). With the true groups the second
is 1.0 per class. Section 18 of this folder's README.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from rdd.risk import CVaR
from rdd.robust.ownership import AllocationSettings, allocate_class

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shape import load  # noqa: E402
from start_purity import default_pool, root_and_seeds  # noqa: E402

PICKS = ("smallest", "apart")
BELOW = (1.0, 1.5)


def coverage(data, seed: int, pick: str, below=BELOW) -> list[tuple[float, float]]:
    """(represented images, expected altered starts) per class, for each bound in ``below``."""
    pool = default_pool(data, seed, rare_pick=pick)
    figures = []
    for bound in below:
        settings = AllocationSettings(rare_below=bound)
        represented = altered = 0.0
        for c in range(data.num_classes):
            class_groups = pool.class_groups(c)
            counts = allocate_class(CVaR(alpha=0.5), pool.group_sizes(c), 10, settings)
            for group, count in zip(class_groups.tolist(), counts.tolist(), strict=False):
                if count:
                    members = pool.members[group]
                    represented += count
                    altered += count * float(pool.altered[members].float().mean())
        figures.append((represented / data.num_classes, altered / data.num_classes))
    return figures


def main() -> None:
    args = root_and_seeds(__doc__.splitlines()[0])
    start = time.process_time()
    print(f"# torch {torch.__version__}; per class: represented images / expected altered starts")
    rules = [f"{pick}/{bound:g}" for pick in PICKS for bound in BELOW]
    print("transform seed " + " ".join(f"{rule:>13s}" for rule in rules))
    for transform in ("grayscale", "invert", "blur"):
        data = load(args.root, transform)
        for seed in args.seeds:
            cells = [cell for pick in PICKS for cell in coverage(data, seed, pick)]
            text = " ".join(f"{rep:6.2f}/{alt:<6.2f}" for rep, alt in cells)
            print(f"{transform:9s} {seed:4d} {text}", flush=True)
    print(f"# {time.process_time() - start:.0f} CPU s")


if __name__ == "__main__":
    main()
