"""Whole runs side by side: the reference's own script and rdd, at one reduced budget.

For every item (a method at an IPC) and seed this runs, on CIFAR-10 (JPEG folders, the layout
``root/{train,test}/<class>/*.jpg``):

1. the reference's own script, from a checkout given on the command line, copied to a scratch
   folder (nothing of it enters this repository); it distils and evaluates its own set;
2. ``rdd.run`` with the published-setting overlay and the same reductions;
3. ``rdd.evaluate`` on the reference's saved set with rdd's protocol (the one of step 2).

and writes two rows per (item, seed) to ``--out``: ``protocol: "own"`` (each tool scores its
set with its own evaluation code) and ``protocol: "rdd"`` (both sets scored by rdd's), test
accuracy in percent. A difference in distillation shows in both rows; one in evaluation only
in ``own``.

Patches to the reference (to its scratch copy only, through a shim imported before its script):

- ``torchvision.datasets.CIFAR10`` reads the JPEG folders (an ``ImageFolder``; its classes sort
  into CIFAR-10's order) instead of downloading the pickled batches (no network here). Both
  tools then decode the same JPEGs with PIL and normalise with the same mean and std.
- VICO's ``main.py`` sets ``args.epoch_eval_train = 1000`` whenever DSA (or DC's augmentation)
  is on, whatever ``--epoch_eval_train`` says; those assignments are removed
  (:func:`keep_eval_epochs`), so its own evaluation trains the epochs both sides were given.
- Nothing else: the budget is set through the script's own arguments (``--Iteration``,
  ``--num_eval``, ``--epoch_eval_train``, ``--num_exp 1``, ``--model ConvNetW32``: both sides
  use ConvNet-3 at width 32, not the published 128), and ``--eval_mode final`` (not
  one of its named modes) makes it evaluate the final set only, with the training model.
  The references take no seed (VICO's ``get_network`` reseeds from the wall clock), so their
  "seeds" are independent repeats.

Usage (a checkout of VICO-UoE/DatasetCondensation outside this repository):

    git --git-dir=<mirror>/repo archive HEAD | tar -x -C /tmp/ref/vico
    python benchmarks/parity/accuracy.py --vico /tmp/ref/vico --data ../shared/data/cifar10-jpeg \\
        [--items dm10,dsa1,dsa10] [--seeds 0,1,2] [--work /tmp/parity-accuracy]
    python benchmarks/parity/accuracy.py --table        # the README table from accuracy.json

A rerun skips the (item, seed, side) already done in ``--work``; rows already in ``--out``
are kept. A failing command stops with one line naming it and its log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rdd.outputs.files import read_metrics

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_OUT = HERE / "accuracy.json"


@dataclass(frozen=True)
class Item:
    """One method at one IPC, with the budget both sides run."""

    method: str
    ipc: int
    script: str  # the reference's script, relative to its checkout
    reference_args: tuple[str, ...]  # besides the shared ones (budget, data, ipc)
    overlay: str  # rdd's published-setting experiment
    iterations: int
    eval_nets: int = 2
    eval_epochs: int = 300
    # ConvNet-3 at width 32, not the published 128, on both sides: evaluation dominates the
    # cost here (one width-128 network x 300 epochs takes minutes on this CPU).
    reference_model: str = "ConvNetW32"
    rdd_net: str = "convnet_w32"


ITEMS = {
    "dm10": Item("dm", 10, "main_DM.py", ("--init", "real"), "dm_cifar10", iterations=100),
    "dsa1": Item("dsa", 1, "main.py", ("--method", "DSA", "--init", "real"), "dsa_cifar10", 100),
    "dsa10": Item("dsa", 10, "main.py", ("--method", "DSA", "--init", "real"), "dsa_cifar10", 2),
}
REQUIRED = {"vico": ("main.py", "main_DM.py", "utils.py", "networks.py")}

SHIM = '''"""Written by rdd's benchmarks/parity/accuracy.py: CIFAR-10 from JPEG folders, no download."""
import os
import runpy
import sys

from torchvision import datasets


class JpegCIFAR10(datasets.ImageFolder):
    def __init__(self, root, train=True, transform=None, download=False, **_):
        split = "train" if train else "test"
        super().__init__(os.path.join(os.environ["PARITY_CIFAR10_JPEG"], split), transform=transform)


datasets.CIFAR10 = JpegCIFAR10
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
'''
# main.py / main_DM.py print this after evaluating the final set.
REFERENCE_RESULT = re.compile(r"Evaluate (\d+) random \S+, mean = ([0-9.]+) std = ([0-9.]+)")


class BenchError(Exception):
    """A one-line reason the benchmark stops (printed as ``error: ...``)."""


def check_checkout(path: Path, name: str) -> Path:
    missing = [f for f in REQUIRED[name] if not (path / f).is_file()]
    if missing:
        raise BenchError(
            f"--{name} {path} is not a checkout of VICO-UoE/DatasetCondensation: no "
            f"{', '.join(missing)}"
        )
    return path


# main.py's assignments that override --epoch_eval_train (DSA: 1000; DC with augmentation: 1000).
FIXED_EVAL_EPOCHS = re.compile(r"^([ \t]*)args\.epoch_eval_train = \d+[^\r\n]*", re.MULTILINE)


def keep_eval_epochs(script: Path) -> None:
    """Make the reference's script evaluate for ``--epoch_eval_train`` epochs, as given."""
    with script.open(newline="") as f:  # keep the file's own line endings (CRLF in VICO's)
        text = f.read()
    with script.open("w", newline="") as f:
        f.write(FIXED_EVAL_EPOCHS.sub(r"\1pass  # rdd parity: keep --epoch_eval_train", text))


def run_logged(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None):
    """Run ``cmd`` with its output in ``log``; a failure is a BenchError naming both."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): see {log}")
    return log.read_text()


def thread_env(**extra: str) -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} | extra


def reference_run(item: Item, seed: int, checkout: Path, data: Path, work: Path) -> dict:
    """The reference's own run: its accuracy (percent) and its saved set."""
    folder = work / "reference" / f"{item.method}{item.ipc}_s{seed}"
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(checkout, folder / "code", ignore=shutil.ignore_patterns(".git"))
    (folder / "code" / "parity_shim.py").write_text(SHIM)
    keep_eval_epochs(folder / "code" / item.script)
    args = [
        *item.reference_args,
        "--dataset", "CIFAR10", "--model", item.reference_model, "--ipc", str(item.ipc),
        "--num_exp", "1", "--num_eval", str(item.eval_nets),
        "--epoch_eval_train", str(item.eval_epochs), "--Iteration", str(item.iterations),
        "--eval_mode", "final", "--data_path", str(folder / "data"),
        "--save_path", str(folder / "result"),
    ]  # fmt: skip
    cmd = [sys.executable, "parity_shim.py", item.script, *args]
    env = thread_env(PARITY_CIFAR10_JPEG=str(data.resolve()))
    text = run_logged(cmd, folder / "run.log", cwd=folder / "code", env=env)
    found = REFERENCE_RESULT.findall(text)
    if not found:
        raise BenchError(f"no final 'Evaluate N random ...' line in {folder / 'run.log'}")
    sets = sorted((folder / "result").glob("res_*.pt"))
    if not sets:
        raise BenchError(f"the reference saved no res_*.pt in {folder / 'result'}")
    result = {"accuracy": 100 * float(found[-1][1]), "set": str(sets[0])}
    done.write_text(json.dumps(result))
    return result


def rdd_overrides(item: Item, seed: int, data: Path) -> list[str]:
    """What both of rdd's commands share: the data, the network and the evaluation."""
    return [
        "data=cifar10", f"data.root={data.resolve()}", f"seed={seed}", f"net={item.rdd_net}",
        f"eval.num_nets={item.eval_nets}", f"eval.epochs={item.eval_epochs}", "eval.dsa=true",
        "eval.shifts=[]", "eval.corruptions=[]", "logger=csv",
    ]  # fmt: skip


def rdd_accuracy(run_dir: Path) -> float:
    return float(read_metrics(run_dir)["test_acc"])  # the headline network's


def rdd_run(item: Item, seed: int, data: Path, work: Path) -> float:
    folder = work / "rdd" / f"{item.method}{item.ipc}_s{seed}"
    if not (folder / "metrics.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [
            sys.executable, "-m", "rdd.run", f"experiment={item.overlay}", f"ipc={item.ipc}",
            f"matching.iterations={item.iterations}", "checkpoint_every=0", "print_config=false",
            "trainer.enable_progress_bar=false", *rdd_overrides(item, seed, data),
            f"hydra.run.dir={folder}",
        ]  # fmt: skip
        run_logged(cmd, work / "rdd" / f"{folder.name}.log", env=thread_env())
    return rdd_accuracy(folder)


def rdd_scores_reference(item: Item, seed: int, reference_set: str, data: Path, work: Path):
    """The reference's set under rdd's protocol (the rdd run's network and evaluation)."""
    folder = work / "rdd_eval" / f"{item.method}{item.ipc}_s{seed}"
    if not (folder / "metrics.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [
            sys.executable, "-m", "rdd.evaluate", f"synset={reference_set}",
            *rdd_overrides(item, seed, data), f"hydra.run.dir={folder}",
        ]  # fmt: skip
        run_logged(cmd, work / "rdd_eval" / f"{folder.name}.log", env=thread_env())
    return rdd_accuracy(folder)


def measure(name: str, seed: int, checkout: Path, data: Path, work: Path) -> list[dict]:
    item = ITEMS[name]
    reference = reference_run(item, seed, checkout, data, work)
    ours = rdd_run(item, seed, data, work)
    theirs_by_rdd = rdd_scores_reference(item, seed, reference["set"], data, work)
    row = {"method": item.method, "ipc": item.ipc, "seed": seed, "ours": round(ours, 2)}
    budget = {
        "iterations": item.iterations,
        "eval_nets": item.eval_nets,
        "eval_epochs": item.eval_epochs,
    }
    return [
        row | {"protocol": "own", "reference": round(reference["accuracy"], 2)} | budget,
        row | {"protocol": "rdd", "reference": round(theirs_by_rdd, 2)} | budget,
    ]


def merge(rows: list[dict], new: list[dict]) -> list[dict]:
    """``rows`` with ``new`` replacing any row of the same (method, ipc, seed, protocol)."""
    key = lambda r: (r["method"], r["ipc"], r["seed"], r["protocol"])  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in rows if key(r) not in fresh] + new


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds of each side, and the paired difference rdd - reference."""
    lines = [
        "| method | ipc | protocol | seeds | iterations | eval | rdd | reference | rdd - reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["ipc"], r["protocol"]), []).append(r)
    for (method, ipc, protocol), group in sorted(groups.items()):
        ours = [r["ours"] for r in group]
        theirs = [r["reference"] for r in group]
        diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
        first = group[0]
        lines.append(
            f"| {method} | {ipc} | {protocol} | {','.join(str(r['seed']) for r in group)} | "
            f"{first['iterations']} | {first['eval_nets']} x {first['eval_epochs']} ep | "
            f"{spread(ours)} | {spread(theirs)} | {spread(diffs, sign=True)} |"
        )
    return "\n".join(lines)


def spread(values: list[float], sign: bool = False) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:+.2f} ± {std:.2f}" if sign else f"{mean:.2f} ± {std:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vico", type=Path, help="checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("--data", type=Path, help="CIFAR-10 root: train/ and test/ class folders")
    parser.add_argument("--items", default=",".join(ITEMS), help=f"of {', '.join(ITEMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rdd-parity-accuracy"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", action="store_true", help="print the table of --out")
    args = parser.parse_args(argv)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    if args.table:
        print(table(rows))
        return 0
    try:
        unknown = set(args.items.split(",")) - set(ITEMS)
        if unknown:
            raise BenchError(
                f"--items: unknown {', '.join(sorted(unknown))}; choose of {', '.join(ITEMS)}"
            )
        if args.vico is None or args.data is None:
            raise BenchError(
                "give --vico <checkout of VICO-UoE/DatasetCondensation> and --data <CIFAR-10 root>"
            )
        checkout = check_checkout(args.vico, "vico")
        if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
            raise BenchError(f"--data {args.data} has no train/ and test/ class folders")
        for name in args.items.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows = merge(rows, measure(name, seed, checkout, args.data, args.work))
                args.out.write_text(json.dumps(rows, indent=1) + "\n")  # kept if a later run fails
                print(
                    f"{name} seed {seed}: {rows[-2]['ours']} / {rows[-2]['reference']} (own), "
                    f"{rows[-1]['ours']} / {rows[-1]['reference']} (rdd)",
                    flush=True,
                )
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
