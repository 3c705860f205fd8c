"""The ceiling of the rare-subgroup benchmark: random real subsets at IPC 10, no distillation.

    .venv/bin/python benchmarks/subgroup_shift/ceiling.py ../shared/data/cifar10-jpeg \
        [--out benchmarks/subgroup_shift/ceiling.json] [--transforms grayscale,invert,blur] \
        [--rare 0,1,2] [--seeds 0,1,2] [--nets 2] [--epochs 300]
    .venv/bin/python benchmarks/subgroup_shift/ceiling.py --table [--out ...]

For every transform, rare count r and seed: per class r random images of the altered (rare)
training group and 10 - r random common ones, evaluated as ``rdd.run`` evaluates a distilled
set of this benchmark (ConvNet-3 width 32, the default protocol: SGD lr 0.01, momentum 0.9,
DSA, ``eval.num_nets`` networks seeded from the seed, no shifted or corrupted sets), through
``rdd.eval.scoring.evaluate_synset``. What it answers: how much does putting r of the ten
images of a class in the rare group lift the worst group, when nothing is distilled?

The draw depends on the seed only, not on r: the rare and the common images of every class are
ranked once per seed, and a count takes the first r rare and the first 10 - r common ones, so
the sets of one seed differ only in the images r swaps (the r=0 set holds no rare image).

One row per evaluation is appended to the JSON file as soon as it is done (a rerun skips the
rows it finds, so a killed sweep resumes): ``{"transform", "rare_per_class", "seed",
"test_acc", "worst_group_acc", "altered_acc", "nets", "epochs", "seconds"}``, percent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

IPC = 10
TRANSFORMS = ("grayscale", "invert", "blur")
KEYS = ("transform", "rare_per_class", "seed", "nets", "epochs")  # what a rerun skips


def run_config(root: str, transform: str, nets: int, epochs: int):
    """rdd.run's config for this benchmark's evaluation (``run.sh``'s overrides)."""
    from rdd.config.compose import compose_or_explain

    overrides = [
        "data=cifar10",
        f"data.root={root}",
        f"data.subgroup={transform}",
        "net=convnet_w32",
        f"ipc={IPC}",
        f"eval.num_nets={nets}",
        f"eval.epochs={epochs}",
        "eval.shifts=[]",
        "eval.corruptions=[]",
        "trainer.enable_progress_bar=false",
    ]
    return compose_or_explain("run", overrides)


def ranked_members(data, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per class, its rare and its common training indices in a seeded random order."""
    from rdd.utils.seeds import derived_seed

    gen = torch.Generator().manual_seed(derived_seed(seed, "ceiling"))
    ranked = []
    for c in range(data.num_classes):
        in_class = data.train_y == c
        rare = (in_class & data.train_subgroup).nonzero().flatten()
        common = (in_class & ~data.train_subgroup).nonzero().flatten()
        ranked.append(
            (
                rare[torch.randperm(len(rare), generator=gen)],
                common[torch.randperm(len(common), generator=gen)],
            )
        )
    return ranked


def subset(data, ranked, rare_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IPC images per class, the first ``rare_per_class`` of them rare; grouped by class."""
    if not 0 <= rare_per_class <= IPC:
        raise ValueError(f"--rare counts must lie in [0, {IPC}], got {rare_per_class}")
    index = torch.cat(
        [
            torch.cat([rare[:rare_per_class], common[: IPC - rare_per_class]])
            for rare, common in ranked
        ]
    )
    return data.train_x[index].clone(), data.train_y[index].clone()


def evaluate(cfg, data, images, labels, seed: int) -> dict[str, float]:
    """rdd.run's evaluation of a set (its nets, settings, trainer and seed; no test partition,
    which only adds worst_cluster_acc)."""
    from rdd.eval.scoring import evaluate_synset
    from rdd.eval.settings import eval_nets, eval_settings, eval_trainer_kwargs

    L.seed_everything(seed, workers=True, verbose=False)  # as rdd.run's prepare()
    # The networks are seeded by (seed, net name, i); rdd.run names them by the net option.
    nets = eval_nets(cfg, data, default_name="convnet_w32")
    settings = eval_settings(cfg, data)
    return evaluate_synset(
        images,
        labels,
        data,
        nets,
        settings,
        eval_trainer_kwargs(cfg),
        seed,
        known_group=data.subgroup_test_set,
    )


def read_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def append_row(path: Path, row: dict) -> None:
    rows = [*read_rows(path), row]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(path)  # atomic: a kill never leaves half a file


def sweep(args: argparse.Namespace) -> None:
    from rdd.config.compose import build

    torch.set_num_threads(1)  # the machine is shared; one thread, as OMP_NUM_THREADS=1
    for transform in args.transforms:
        done = {tuple(row[k] for k in KEYS) for row in read_rows(args.out)}
        todo = [
            (r, s)
            for s in args.seeds
            for r in args.rare
            if (transform, r, s, args.nets, args.epochs) not in done
        ]
        if not todo:
            continue
        cfg = run_config(args.root, transform, args.nets, args.epochs)
        data = build(cfg.data, "data")
        data.setup()
        for r, seed in todo:
            start = time.perf_counter()
            images, labels = subset(data, ranked_members(data, seed), r)
            metrics = evaluate(cfg, data, images, labels, seed)
            row = {
                "transform": transform,
                "rare_per_class": r,
                "seed": seed,
                "test_acc": metrics["test_acc"],
                "worst_group_acc": metrics["worst_group_acc"],
                "altered_acc": metrics[f"group_{transform}_acc"],
                "nets": args.nets,
                "epochs": args.epochs,
                "seconds": time.perf_counter() - start,
            }
            row |= {k: round(v, 2) for k, v in row.items() if isinstance(v, float)}
            append_row(args.out, row)
            print(json.dumps(row), flush=True)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def paired(diffs: list[float]) -> str:
    """Mean ± std over seeds of a paired difference, in points (signed)."""
    if not diffs:
        return "-"
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{statistics.mean(diffs):+.2f} ± {std:.2f}"


def table(rows: list[dict]) -> str:
    """Per transform and r: mean ± std over seeds, and the paired (by seed) change vs r=0."""
    lines = [
        "| transform | rare / class | seeds | clean test | worst group | altered test | "
        "Δ clean vs r=0 | Δ worst group vs r=0 |",
        "| --- " * 8 + "|",
    ]
    order = {t: i for i, t in enumerate(TRANSFORMS)}
    for transform in sorted({r["transform"] for r in rows}, key=lambda t: (order.get(t, 99), t)):
        mine = [r for r in rows if r["transform"] == transform]
        base = {r["seed"]: r for r in mine if r["rare_per_class"] == 0}
        for count in sorted({r["rare_per_class"] for r in mine}):
            group = [r for r in mine if r["rare_per_class"] == count]
            group.sort(key=lambda r: r["seed"])
            cells = [mean_std([r[k] for r in group]) for k in ("test_acc", "worst_group_acc")]
            cells.append(mean_std([r["altered_acc"] for r in group]))
            for key in ("test_acc", "worst_group_acc"):
                cells.append(
                    paired([r[key] - base[r["seed"]][key] for r in group if r["seed"] in base])
                )
            seeds = ",".join(str(r["seed"]) for r in group)
            lines.append(f"| {transform} | {count} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", nargs="?", help="the CIFAR-10 root, e.g. ../shared/data/cifar10-jpeg"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "ceiling.json")
    parser.add_argument("--transforms", type=lambda t: t.split(","), default=list(TRANSFORMS))
    parser.add_argument("--rare", type=csv_ints, default=[0, 1, 2])
    parser.add_argument("--seeds", type=csv_ints, default=[0, 1, 2])
    parser.add_argument("--nets", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    if not args.table:
        if args.root is None:
            parser.error("give the CIFAR-10 root (or --table)")
        sweep(args)
    print(table(read_rows(args.out)))


if __name__ == "__main__":
    main()
