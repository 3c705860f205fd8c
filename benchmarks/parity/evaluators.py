"""Both evaluations on the same sets: VICO's own (main.py's ``evaluate_synset``) and
``rdd.evaluate``, N networks each, to tell a gap in evaluation from one in distillation.

VICO's evaluation runs through accuracy.py's scratch copy of main.py with ``--Iteration 0``:
it starts from the given set (``PARITY_START``, the ``--same-start`` patch), evaluates it at
iteration 0 and makes no image update (the copy skips the update after its final evaluation).
``rdd.evaluate`` scores the same file with the protocol of accuracy.py's rows. Sets: VICO's
``res_*.pt`` or rdd's ``synset.pt`` (images in the mean/std-normalised space both tools use for
CIFAR-10).

    python benchmarks/parity/evaluators.py --vico /tmp/ref/vico --data ../shared/data/cifar10-jpeg \\
        --item dsa1 --nets 10 --work /tmp/evaluators --out benchmarks/parity/evaluators.json \\
        <name>=<set file> ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import accuracy  # noqa: E402
from reference_copies import BenchError, check_checkout  # noqa: E402

from rdd.outputs.files import read_metrics  # noqa: E402
from rdd.synset import SyntheticSet  # noqa: E402


def set_images(path: Path) -> torch.Tensor:
    """The images of a VICO ``res_*.pt`` (its first experiment) or of an rdd ``synset.pt``."""
    if path.name.startswith("res_"):
        return torch.load(path, weights_only=False)["data"][0][0].detach().cpu()
    return SyntheticSet.load(path).images.detach().cpu()


def vico_scores(item, name: str, path: Path, checkout: Path, data: Path, work: Path) -> float:
    start = work / name / "start.pt"
    start.parent.mkdir(parents=True, exist_ok=True)
    images = set_images(path)
    torch.save(images, start)
    run = accuracy.reference_run(item, 0, checkout, data, work / name, start)
    if not torch.equal(set_images(Path(run["set"])), images):  # what it scored is what it saved
        raise BenchError(f"VICO's copy scored another set than {path}: see {run['set']}")
    return run["accuracy"]


def rdd_scores(item, name: str, path: Path, data: Path, work: Path) -> tuple[float, float]:
    accuracy.rdd_scores_reference(item, 0, str(path), data, work / name)
    metrics = read_metrics(work / name / "rdd_eval" / item.folder(0))
    return float(metrics["test_acc"]), float(metrics["test_acc_std"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vico", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--item", default="dsa1", help="an accuracy.py item run by VICO")
    parser.add_argument("--nets", type=accuracy.positive, default=10)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rdd-parity-evaluators"))
    parser.add_argument("--out", type=Path, default=HERE / "evaluators.json")
    parser.add_argument("sets", nargs="+", help="<name>=<set file>")
    args = parser.parse_args(argv)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    try:
        item = accuracy.ITEMS.get(args.item)
        if item is None or item.tool != "vico":
            raise BenchError(f"--item {args.item}: choose one of VICO's items (dm10, dsa1, dsa10)")
        checkout = check_checkout(args.vico, "vico")
        # iteration 0: the given set as it is; the item's evaluation epochs, N networks
        item = accuracy.with_budget(item, iterations=0, eval_nets=args.nets)
        for name, _, file in (s.partition("=") for s in args.sets):
            path = Path(file)
            if not path.is_file():
                raise BenchError(f"{name}={file}: no such file")
            vico = vico_scores(item, name, path, checkout, args.data, args.work)
            rdd, rdd_std = rdd_scores(item, name, path, args.data, args.work)
            row = {"set": name, "item": args.item, "nets": args.nets}
            row |= {"epochs": item.eval_epochs, "vico": round(vico, 2), "rdd": round(rdd, 2)}
            rows = [
                r for r in rows if (r["set"], r["item"], r["nets"]) != (name, args.item, args.nets)
            ]
            rows.append(row | {"rdd_std": round(rdd_std, 2)})
            args.out.write_text(json.dumps(rows, indent=1) + "\n")
            print(f"{name}: VICO {vico:.2f}, rdd {rdd:.2f} ± {rdd_std:.2f}", flush=True)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
