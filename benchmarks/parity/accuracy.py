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

Patches to the references (to their scratch copies only: ``reference_copies.py``):

- Both: ``torchvision.datasets.CIFAR10`` reads the JPEG folders (an ``ImageFolder``, through a
  shim imported before the script; its classes sort into CIFAR-10's order) instead of
  downloading the pickled batches (no network here). Both tools then decode the same JPEGs
  with PIL and normalise with the same mean and std.
- VICO-UoE/DatasetCondensation (``--vico``; items dm10, dsa1, dsa10): ``main.py`` sets
  ``args.epoch_eval_train = 1000`` whenever DSA (or DC's augmentation) is on, whatever
  ``--epoch_eval_train`` says; those assignments become ``pass``, so its own evaluation trains
  the epochs both sides were given. ``--eval_mode final`` (not one of its named modes) makes it
  evaluate the final set only, with the training model; its ``res_*.pt`` is scored by rdd.
- uitrbn/IDM (``--idm``; item idm10, ``IDM_cifar10.py``): (a) ``import torchnet`` finds a stub
  ``torchnet.py`` with ``meter.ClassErrorMeter`` (top-1 accuracy in percent, ``n``, ``reset``:
  the one piece of torchnet it uses; torchnet is not in rdd's environment); (b) its evaluation
  pool ``get_eval_pool(args.eval_mode, 'ConvNet', args.model)`` becomes
  ``get_eval_pool(args.eval_mode, args.model, args.model)``: ``--eval_mode S`` ("the same as
  the training model") otherwise evaluates a hard-coded width-128 ConvNet, and the other modes
  never evaluate (it evaluates at ``eval_it_pool[1:]``, their pool is ``[Iteration]``); with
  ``--eval_interval <iterations>`` it evaluates the final set only; (c) an empty
  ``checkpoints/`` beside the script, where it ``os.mkdir``s its run's folder. Nothing else: it
  takes the device it finds (``cuda`` if available, else the CPU; the ``.cuda()`` calls are in
  functions it does not call), needs no ``.view`` change on current PyTorch, logs to stdout
  only, and honours ``--epoch_eval_train``. rdd scores the set its own evaluation scored: the
  ``checkpoints/*/acc_*.pkl`` it pickles when it evaluates, after ``--Iteration`` image updates
  like rdd's run (its ``res_*.pt`` is saved after one more update). Both sides store 2x2 packed
  images (``--aug``, rdd's ``factor: 2``) and evaluate them expanded the same way (four bilinear
  upsampled tiles per stored image: IDM's ``number_sign_augment``, rdd's ``expand``):
  ``rdd.evaluate`` reads it with ``synset_format=idm factor=2 normalization=mtt`` (IDM loads
  CIFAR-10 with MTT's ``get_dataset``: the same mean and std as VICO's).

- GeorgeCazenavette/mtt-distillation (``--mtt``; item mtt1, ``buffer.py`` then ``distill.py``):
  ``buffer.py`` records each epoch's parameters with ``p.detach().cpu()``, a copy on a GPU
  but the live tensors on a CPU, so that every checkpoint of a CPU trajectory is the final
  parameters (distill.py's loss is then inf: start == target); the copy clones them
  (``reference_copies.EXPERT_SNAPSHOT``); ``--save_interval`` = ``--num_experts`` saves its
  experts in one file. ``distill.py`` (``reference_copies.MTT_PATCHES``): (a) it evaluates the
  final set only (its ``eval_it_pool`` also holds iteration 0, and it saves
  ``images_best.pt`` only when an evaluation beats the earlier ones, so the final set might
  never be saved); (b) its saving block's ``image_syn.cuda()`` becomes ``.to(args.device)``;
  (c) it also saves the learned step size its evaluation used, ``lr_best.pt``, beside
  ``images_best.pt`` (upstream logs it to W&B only; rdd.evaluate reads it, as forks save it);
  (d) it stops after the final evaluation (no image update after it). W&B runs offline
  (``WANDB_MODE=offline``) under a fixed name. Both sides make a reduced buffer first (2
  experts x 4 epochs on each side, made once and shared by every seed: buffer.py takes no seed,
  rdd seeds experts from ``experts.seed``), with ZCA; rdd.evaluate reads the reference's set
  with ``synset_format=mtt normalization=zca`` and ``data.zca=true data.val_fraction=0``.

The budget is set through the scripts' own arguments (``--Iteration``, ``--num_eval``,
``--epoch_eval_train``, ``--num_exp 1``, ``--model ConvNetW32``: both sides use ConvNet-3 at
width 32, not the published 128). IDM also gets its published CIFAR-10 IPC 10 command
(``command.txt``) and, explicitly, the defaults rdd's ``idm`` config matches (queue of 100
networks, one pushed every 30 iterations, 2 trained 10 steps on 256 real images per iteration,
one sampled for matching, 256 real images per class). The references take no seed (their
``get_network`` reseeds from the wall clock), so their "seeds" are independent repeats.

Usage (checkouts outside this repository):

    git --git-dir=<mirror>/repo archive HEAD | tar -x -C /tmp/ref/vico
    for f in $(git --git-dir=<IDM mirror> ls-tree --name-only HEAD | grep .py$); do
        git --git-dir=<IDM mirror> show HEAD:$f > /tmp/ref/idm/$f; done
    git --git-dir=<mtt-distillation mirror> archive HEAD | tar -x -C /tmp/ref/mtt  # (or git show
        # its .py files one by one, as for IDM, where the mirror lacks its docs/ images)
    python benchmarks/parity/accuracy.py --vico /tmp/ref/vico --idm /tmp/ref/idm --mtt /tmp/ref/mtt \\
        --data ../shared/data/cifar10-jpeg [--items dm10,dsa1,dsa10,idm10,mtt1] [--seeds 0,1,2] \\
        [--work /tmp/parity-accuracy]
    python benchmarks/parity/accuracy.py --table        # the README table from accuracy.json

``--same-start`` (VICO's items): the reference starts from the set rdd's run of the same seed
starts from (``start_set.py``; the copy loads ``$PARITY_START``), so that the random draw of
the starting images is no longer a difference; its rows carry ``"start": "same"``.
``evaluators.py`` scores given sets with VICO's evaluation and ``rdd.evaluate``, N networks.

``--iterations``, ``--eval-nets`` and ``--eval-epochs`` replace the items' budget (smoke
runs); the rows record the budget, rows of different budgets are never merged nor pooled,
and their work folders get a tag. A rerun skips the (item, seed, side) already done in
``--work``; rows already in ``--out`` are kept. A failing command stops with one line naming
it and its log (the rows measured before it stay in ``--out``).
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
from dataclasses import dataclass, replace
from pathlib import Path

from rdd.outputs.files import read_metrics

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reference_copies import REFERENCES, BenchError, check_checkout, make_copy  # noqa: E402

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
    tool: str = "vico"  # the reference that runs it: a key of reference_copies.REFERENCES
    rdd_reads: tuple[str, ...] = ()  # rdd.evaluate's overrides that read the reference's set
    tag: str = ""  # folder suffix of a budget other than the item's own (with_budget)
    rdd_data: tuple[str, ...] = ()  # data overrides of every rdd command (MTT: ZCA on all 50k)
    # MTT: the expert buffer both sides make first (experts x epochs; 0: no buffer)
    buffer_experts: int = 0
    buffer_epochs: int = 0
    reference_buffer_args: tuple[str, ...] = ()  # buffer.py's besides the budget
    same_start: bool = False  # the reference starts from rdd's run's starting set (VICO only)

    def folder(self, seed: int) -> str:
        """The reference's run (and rdd's scoring of its set) of ``seed``."""
        start = "_same" if self.same_start else ""
        return f"{self.method}{self.ipc}{self.tag}{start}_s{seed}"

    def rdd_folder(self, seed: int) -> str:
        """rdd's run of ``seed``: the same whether the reference starts from its start or not."""
        return f"{self.method}{self.ipc}{self.tag}_s{seed}"

    def budget(self) -> dict[str, int]:
        budget = {
            "iterations": self.iterations,
            "eval_nets": self.eval_nets,
            "eval_epochs": self.eval_epochs,
        }
        if self.buffer_experts:
            budget |= {"experts": self.buffer_experts, "expert_epochs": self.buffer_epochs}
        return budget

    def buffer_folder(self) -> str:
        """The buffer's folder (one per tool and buffer budget, shared by every seed)."""
        return f"{self.method}_buffer_{self.buffer_experts}x{self.buffer_epochs}"


# uitrbn/IDM command.txt's CIFAR10 IPC 10 command, less what the items set for every reference
# (budget, --model, --ipc, --num_exp, --eval_*); then its defaults that rdd's idm config
# matches, given here so that the command states them.
IDM_CIFAR10_IPC10 = (
    "--method", "IDM",  # only names its files (res_IDM_...; default DM)
    "--init", "real", "--dsa_strategy", "color_crop_cutout_flip_scale_rotate", "--lr_img", "0.2",
    "--net_train_real", "--outer_loop", "1", "--mismatch_lambda", "0", "--net_decay",
    "--embed_last", "1000", "--syn_ce", "--ce_weight", "0.5", "--train_net_num", "1", "--aug",
    "--batch_real", "256", "--net_num", "100", "--net_generate_interval", "30",
    "--net_push_num", "1", "--fetch_net_num", "2", "--model_train_steps", "10",
    "--trained_bs", "256", "--lr_net", "0.01", "--batch_train", "256",
)  # fmt: skip
# VICO's readme command for DSA. main.py's --dsa_strategy defaults to 'None': without it
# "--method DSA" matches and evaluates with no augmentation at all (DC with DSA's name).
VICO_DSA = (
    "--method",
    "DSA",
    "--init",
    "real",
    "--dsa_strategy",
    "color_crop_cutout_flip_scale_rotate",
)
# mtt-distillation's CIFAR-10 IPC 1 settings, as rdd's mtt_cifar10_ipc1 overlay states them
# (ZCA, real initialisation, DSA, the step size learned from 0.01); its buffer.py with the
# expert settings of rdd's experts config (SGD lr 0.01 without momentum or decay, batch 256,
# DSA). Both sides make a reduced buffer: MTT_BUFFER experts x epochs (published 100 x 50).
MTT_CIFAR10_IPC1 = (
    "--zca", "--pix_init", "real", "--syn_steps", "50", "--expert_epochs", "2",
    "--max_start_epoch", "2", "--lr_img", "100", "--lr_lr", "1e-07", "--lr_teacher", "0.01",
)  # fmt: skip
MTT_BUFFER_ARGS = ("--zca", "--lr_teacher", "0.01", "--mom", "0", "--l2", "0", "--batch_train", "256")  # fmt: skip
ITEMS = {
    "dm10": Item("dm", 10, "main_DM.py", ("--init", "real"), "dm_cifar10", iterations=100),
    "dsa1": Item("dsa", 1, "main.py", VICO_DSA, "dsa_cifar10", 100),
    "dsa10": Item("dsa", 10, "main.py", VICO_DSA, "dsa_cifar10", 2),
    # 10 iterations, as benchmarks/subgroup_shift/run.sh runs IDM on this CPU
    "idm10": Item(
        "idm", 10, "IDM_cifar10.py", IDM_CIFAR10_IPC10, "idm_cifar10_ipc10", iterations=10,
        tool="idm", rdd_reads=("synset_format=idm", "factor=2", "normalization=mtt"),
    ),
    # a buffer of 2 experts x 4 epochs: the fewest that still hold the published start epochs
    # (0-1) and 2-epoch targets
    "mtt1": Item(
        "mtt", 1, "distill.py", MTT_CIFAR10_IPC1, "mtt_cifar10_ipc1", iterations=200,
        tool="mtt", rdd_reads=("synset_format=mtt", "normalization=zca"),
        rdd_data=("data.zca=true", "data.val_fraction=0"), buffer_experts=2, buffer_epochs=4,
        reference_buffer_args=MTT_BUFFER_ARGS,
    ),
}  # fmt: skip

# main.py / main_DM.py / IDM_cifar10.py print this after evaluating the final set.
REFERENCE_RESULT = re.compile(r"Evaluate (\d+) random \S+, mean = ([0-9.]+) std = ([0-9.]+)")


def with_budget(item: Item, **budget: int | None) -> Item:
    """``item`` with the ``iterations``/``eval_nets``/``eval_epochs`` given (None: its own),
    tagged when they differ, so that its work folders are not the item's own budget's."""
    own = {k: getattr(item, k) for k in ("iterations", "eval_nets", "eval_epochs")}
    new = own | {k: v for k, v in budget.items() if v is not None}
    if new == own:
        return item
    tag = f"_it{new['iterations']}_e{new['eval_nets']}x{new['eval_epochs']}"
    return replace(item, **new, tag=tag)


def with_same_start(item: Item) -> Item:
    """``item`` whose reference run starts from rdd's run's starting set (VICO's scripts)."""
    if item.tool != "vico":
        raise BenchError(
            f"--same-start: the {item.method}{item.ipc} reference cannot load a start set; "
            "only VICO's items can (dm10, dsa1, dsa10)"
        )
    return replace(item, same_start=True)


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


def reference_command(item: Item, folder: Path) -> list[str]:
    """The reference's command (run in ``folder / "code"``): the item's args, then the budget."""
    args = [
        *item.reference_args,
        "--dataset", "CIFAR10", "--model", item.reference_model, "--ipc", str(item.ipc),
        "--num_eval", str(item.eval_nets),
        "--epoch_eval_train", str(item.eval_epochs), "--Iteration", str(item.iterations),
        *REFERENCES[item.tool].final_eval_args(item.iterations),
        "--data_path", str(folder / "data"),
    ]  # fmt: skip
    if item.buffer_experts:  # distill.py: one set, saved under its own folder
        args += ["--buffer_path", str(reference_buffer_path(item, folder.parent))]
    else:
        args += ["--num_exp", "1", "--save_path", str(folder / "result")]
    return [sys.executable, "parity_shim.py", item.script, *args]


def reference_buffer_path(item: Item, runs: Path) -> Path:
    """Where the reference's buffer of ``item`` lies, ``runs`` being its runs' folder."""
    return runs / item.buffer_folder() / "buffers"


def reference_buffer_command(item: Item, runs: Path) -> list[str]:
    """MTT's buffer.py with the item's buffer budget (run in its folder's ``code``)."""
    folder = runs / item.buffer_folder()
    n = str(item.buffer_experts)
    return [
        sys.executable, "parity_shim.py", "buffer.py", *item.reference_buffer_args,
        "--dataset", "CIFAR10", "--model", item.reference_model, "--num_experts", n,
        "--train_epochs", str(item.buffer_epochs), "--save_interval", n,  # one file of all
        "--buffer_path", str(reference_buffer_path(item, runs)),
        "--data_path", str(folder / "data"),
    ]  # fmt: skip


def reference_env(item: Item, data: Path) -> dict[str, str]:
    return thread_env(PARITY_CIFAR10_JPEG=str(data.resolve()), **REFERENCES[item.tool].env)


def reference_buffer(item: Item, checkout: Path, data: Path, work: Path) -> None:
    """MTT: the reference's expert trajectories, made once for all seeds (buffer.py takes no
    seed either)."""
    runs = work / "reference"
    folder = runs / item.buffer_folder()
    if (folder / "done").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    make_copy(item.tool, checkout, folder / "code", "buffer.py")
    log = folder / "run.log"
    cmd = reference_buffer_command(item, runs)
    run_logged(cmd, log, cwd=folder / "code", env=reference_env(item, data))
    if not any(reference_buffer_path(item, runs).rglob("replay_buffer_0.pt")):
        raise BenchError(f"buffer.py saved no replay_buffer_0.pt: see {log}")
    (folder / "done").write_text("")


def reference_run(
    item: Item, seed: int, checkout: Path, data: Path, work: Path, start: Path | None = None
) -> dict:
    """The reference's own run: its accuracy (percent) and the set it scored; ``start``: the
    starting set it loads (``--same-start``)."""
    folder = work / "reference" / item.folder(seed)
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    make_copy(item.tool, checkout, folder / "code", item.script)
    log = folder / "run.log"
    env = reference_env(item, data) | ({"PARITY_START": str(start)} if start else {})
    text = run_logged(reference_command(item, folder), log, cwd=folder / "code", env=env)
    found = REFERENCE_RESULT.findall(text)
    if not found:
        raise BenchError(f"no final 'Evaluate N random ...' line in {log}")
    saved = REFERENCES[item.tool].saved_set
    sets = sorted(folder.glob(saved))
    if not sets:
        raise BenchError(f"the reference saved no {saved} in {folder}")
    result = {"accuracy": 100 * float(found[-1][1]), "set": str(sets[0])}
    done.write_text(json.dumps(result))
    return result


def rdd_overrides(item: Item, seed: int, data: Path) -> list[str]:
    """What both of rdd's commands share: the data, the network and the evaluation."""
    return [
        "data=cifar10", f"data.root={data.resolve()}", f"seed={seed}", f"net={item.rdd_net}",
        f"eval.num_nets={item.eval_nets}", f"eval.epochs={item.eval_epochs}", "eval.dsa=true",
        "eval.shifts=[]", "eval.corruptions=[]", "logger=csv", *item.rdd_data,
    ]  # fmt: skip


def rdd_experts(item: Item, runs: Path) -> list[str]:
    """MTT: the buffer budget and where rdd.buffer puts it (``runs``: rdd's runs' folder)."""
    if not item.buffer_experts:
        return []
    return [
        f"experts.num_experts={item.buffer_experts}", f"experts.epochs={item.buffer_epochs}",
        f"experts.root={runs / item.buffer_folder() / 'buffers'}",
    ]  # fmt: skip


def rdd_accuracy(run_dir: Path) -> float:
    return float(read_metrics(run_dir)["test_acc"])  # the headline network's


def rdd_run_command(item: Item, seed: int, data: Path, folder: Path) -> list[str]:
    overrides = rdd_run_overrides(item, seed, data, folder.parent)
    return [sys.executable, "-m", "rdd.run", *overrides, f"hydra.run.dir={folder}"]


def rdd_run_overrides(item: Item, seed: int, data: Path, runs: Path) -> list[str]:
    """rdd.run's overrides of ``item`` at ``seed`` (``runs``: the folder of rdd's runs)."""
    return [
        f"experiment={item.overlay}", f"ipc={item.ipc}", f"matching.iterations={item.iterations}",
        "checkpoint_every=0", "print_config=false", "trainer.enable_progress_bar=false",
        *rdd_overrides(item, seed, data), *rdd_experts(item, runs),
    ]  # fmt: skip


def rdd_start(item: Item, seed: int, data: Path, work: Path) -> Path:
    """The starting set of rdd's run of ``seed`` (start_set.py), for the reference to load."""
    out = work / "rdd_start" / f"{item.rdd_folder(seed)}.pt"
    if not out.is_file():
        overrides = rdd_run_overrides(item, seed, data, work / "rdd")
        cmd = [sys.executable, str(HERE / "start_set.py"), str(out), *overrides]
        out.parent.mkdir(parents=True, exist_ok=True)
        run_logged(cmd, out.with_suffix(".log"), env=thread_env())
    return out


def rdd_buffer_command(item: Item, data: Path, runs: Path) -> list[str]:
    """rdd.buffer with the rdd run's overrides: the buffer its runs of every seed look up
    (experts are seeded from ``experts.seed``, not from the run's seed)."""
    return [
        sys.executable, "-m", "rdd.buffer", f"experiment={item.overlay}", f"ipc={item.ipc}",
        "print_config=false", *rdd_overrides(item, 0, data), *rdd_experts(item, runs),
        f"hydra.run.dir={runs / item.buffer_folder()}",
    ]  # fmt: skip


def rdd_buffer(item: Item, data: Path, work: Path) -> None:
    runs = work / "rdd"
    done = runs / item.buffer_folder() / "done"
    if not done.is_file():
        cmd = rdd_buffer_command(item, data, runs)
        run_logged(cmd, runs / f"{item.buffer_folder()}.log", env=thread_env())
        done.write_text("")


def rdd_run(item: Item, seed: int, data: Path, work: Path) -> float:
    folder = work / "rdd" / item.rdd_folder(seed)
    if not (folder / "metrics.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = rdd_run_command(item, seed, data, folder)
        run_logged(cmd, work / "rdd" / f"{folder.name}.log", env=thread_env())
    return rdd_accuracy(folder)


def rdd_evaluate_command(
    item: Item, seed: int, reference_set: str, data: Path, folder: Path
) -> list[str]:
    return [
        sys.executable, "-m", "rdd.evaluate", f"synset={reference_set}", *item.rdd_reads,
        *rdd_overrides(item, seed, data), f"hydra.run.dir={folder}",
    ]  # fmt: skip


def rdd_scores_reference(item: Item, seed: int, reference_set: str, data: Path, work: Path):
    """The reference's set under rdd's protocol (the rdd run's network and evaluation)."""
    folder = work / "rdd_eval" / item.folder(seed)
    if not (folder / "metrics.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        cmd = rdd_evaluate_command(item, seed, reference_set, data, folder)
        run_logged(cmd, work / "rdd_eval" / f"{folder.name}.log", env=thread_env())
    return rdd_accuracy(folder)


def measure(item: Item, seed: int, checkout: Path, data: Path, work: Path) -> list[dict]:
    if item.buffer_experts:
        reference_buffer(item, checkout, data, work)
        rdd_buffer(item, data, work)
    start = rdd_start(item, seed, data, work) if item.same_start else None
    reference = reference_run(item, seed, checkout, data, work, start)
    ours = rdd_run(item, seed, data, work)
    theirs_by_rdd = rdd_scores_reference(item, seed, reference["set"], data, work)
    row = {"method": item.method, "ipc": item.ipc, "seed": seed, "ours": round(ours, 2)}
    if item.same_start:
        row["start"] = "same"
    return [
        row | {"protocol": "own", "reference": round(reference["accuracy"], 2)} | item.budget(),
        row | {"protocol": "rdd", "reference": round(theirs_by_rdd, 2)} | item.budget(),
    ]


def row_key(row: dict) -> tuple:
    budget = (row["iterations"], row["eval_nets"], row["eval_epochs"])
    return (row["method"], row["ipc"], row.get("start", "own"), row["protocol"], *budget)


def merge(rows: list[dict], new: list[dict]) -> list[dict]:
    """``rows`` with ``new`` replacing any row of the same (method, ipc, start, protocol, budget,
    seed)."""
    fresh = {(*row_key(r), r["seed"]) for r in new}
    return [r for r in rows if (*row_key(r), r["seed"]) not in fresh] + new


def table(rows: list[dict]) -> str:
    """Mean ± std over seeds of each side, and the paired difference rdd - reference; one line
    per (method, ipc, start, protocol, budget). start "own": each tool draws its starting set;
    "same": the reference starts from rdd's."""
    lines = [
        "| method | ipc | start | protocol | seeds | iterations | eval | rdd | reference "
        "| rdd - reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(row_key(r), []).append(r)
    for (method, ipc, start, protocol, *_), group in sorted(groups.items()):
        ours = [r["ours"] for r in group]
        theirs = [r["reference"] for r in group]
        diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
        first = group[0]
        lines.append(
            f"| {method} | {ipc} | {start} | {protocol} | {','.join(str(r['seed']) for r in group)} | "
            f"{first['iterations']} | {first['eval_nets']} x {first['eval_epochs']} ep | "
            f"{spread(ours)} | {spread(theirs)} | {spread(diffs, sign=True)} |"
        )
    return "\n".join(lines)


def spread(values: list[float], sign: bool = False) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:+.2f} ± {std:.2f}" if sign else f"{mean:.2f} ± {std:.2f}"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vico", type=Path, help="checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("--idm", type=Path, help="checkout of uitrbn/IDM (its .py files)")
    parser.add_argument("--mtt", type=Path, help="checkout of GeorgeCazenavette/mtt-distillation")
    parser.add_argument("--data", type=Path, help="CIFAR-10 root: train/ and test/ class folders")
    parser.add_argument("--items", default=",".join(ITEMS), help=f"of {', '.join(ITEMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rdd-parity-accuracy"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", action="store_true", help="print the table of --out")
    parser.add_argument(
        "--same-start",
        action="store_true",
        help="the reference starts from rdd's run's starting set (VICO's items; rows 'start: same')",
    )
    budget = "instead of every item's own (a smoke run); recorded in the rows"
    parser.add_argument("--iterations", type=positive, help=f"distillation iterations {budget}")
    parser.add_argument("--eval-nets", type=positive, help=f"evaluation networks {budget}")
    parser.add_argument("--eval-epochs", type=positive, help=f"evaluation epochs {budget}")
    return parser.parse_args(argv)


def checked_inputs(args: argparse.Namespace) -> tuple[list[Item], dict[str, Path]]:
    """The items to run (at the budget asked) and the checkouts they need, checked."""
    names = args.items.split(",")
    unknown = set(names) - set(ITEMS)
    if unknown:
        raise BenchError(
            f"--items: unknown {', '.join(sorted(unknown))}; choose of {', '.join(ITEMS)}"
        )
    given = {"vico": args.vico, "idm": args.idm, "mtt": args.mtt}
    checkouts = {}
    for tool in sorted({ITEMS[n].tool for n in names}):
        if given[tool] is None:
            needing = ",".join(n for n in names if ITEMS[n].tool == tool)
            raise BenchError(
                f"--items {needing}: give --{tool} <checkout of {REFERENCES[tool].repo}>"
            )
        checkouts[tool] = check_checkout(given[tool], tool)
    if args.data is None:
        raise BenchError("give --data <CIFAR-10 root with train/ and test/ class folders>")
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        raise BenchError(f"--data {args.data} has no train/ and test/ class folders")
    budget = {"iterations": args.iterations, "eval_nets": args.eval_nets}
    items = [with_budget(ITEMS[n], **budget, eval_epochs=args.eval_epochs) for n in names]
    if args.same_start:
        items = [with_same_start(item) for item in items]
    return items, checkouts


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    if args.table:
        print(table(rows))
        return 0
    try:
        items, checkouts = checked_inputs(args)
        for item in items:
            for seed in (int(s) for s in args.seeds.split(",")):
                new = measure(item, seed, checkouts[item.tool], args.data, args.work)
                rows = merge(rows, new)
                args.out.write_text(json.dumps(rows, indent=1) + "\n")  # kept if a later run fails
                print(
                    f"{item.folder(seed)}: {new[0]['ours']} / {new[0]['reference']} (own), "
                    f"{new[1]['ours']} / {new[1]['reference']} (rdd)",
                    flush=True,
                )
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
