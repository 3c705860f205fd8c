"""The references' scratch copies for ``accuracy.py``: what a checkout must hold, and the patches.

Each reference runs from a copy of its checkout in a scratch folder; the patches below touch
that copy only (nothing of the references enters this repository). Every copy gets
:data:`SHIM`, imported before the script: ``torchvision.datasets.CIFAR10`` reads the JPEG
folders instead of downloading. Per reference:

- ``vico`` (VICO-UoE/DatasetCondensation): :func:`patch_vico` (:func:`keep_eval_epochs`,
  :func:`no_update_after_the_final_evaluation`, :func:`start_from_file`, :func:`siamese_copies`).
- ``idm`` (uitrbn/IDM): :func:`patch_idm`.
- ``mtt`` (GeorgeCazenavette/mtt-distillation): :func:`patch_mtt`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class BenchError(Exception):
    """A one-line reason the benchmark stops (printed as ``error: ...``)."""


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

# main.py's assignments that override --epoch_eval_train (DSA: 1000; DC with augmentation: 1000).
FIXED_EVAL_EPOCHS = re.compile(r"^([ \t]*)args\.epoch_eval_train = \d+[^\r\n]*", re.MULTILINE)


def keep_eval_epochs(text: str) -> str:
    """Make VICO's script evaluate for ``--epoch_eval_train`` epochs, as given."""
    return FIXED_EVAL_EPOCHS.sub(r"\1pass  # rdd parity: keep --epoch_eval_train", text)


# VICO's loop runs it = 0..Iteration: it evaluates at it == Iteration, then still updates the
# images once more and saves that set (res_*.pt): Iteration + 1 updates, one more than the set
# it scored and than rdd's run (at DSA IPC 10's 2 iterations, half as much again).
IMAGE_STEP = re.compile(r"^([ \t]*)optimizer_img\.step\(\)", re.MULTILINE)


def no_update_after_the_final_evaluation(text: str) -> str:
    """Skip the image updates of VICO's last loop pass, so that res_*.pt holds the set its own
    final evaluation scored (Iteration updates, as rdd's run)."""
    text, found = IMAGE_STEP.subn(
        r"\1if it < args.Iteration: optimizer_img.step()  # rdd parity: none after the last eval",
        text,
    )
    if not found:
        raise BenchError("no `optimizer_img.step()` to patch: not the VICO version expected")
    return text


# utils.py's Siamese augmentations give every image the first image's parameters in place,
# ``randb[:] = randb[0]``: current PyTorch refuses to write a tensor from a view of itself
# (a batch of one, e.g. DSA at IPC 1). A copy of the first row does the same.
SIAMESE_COPY = re.compile(r"^([ \t]*)(\w+)\[:\] = \2\[0\]", re.MULTILINE)


def siamese_copies(text: str) -> str:
    """``x[:] = x[0]`` -> ``x[:] = x[0].clone()`` (same values; no self-aliasing write)."""
    text, found = SIAMESE_COPY.subn(r"\1\2[:] = \2[0].clone()  # rdd parity: no aliasing", text)
    if not found:
        raise BenchError("utils.py has no `x[:] = x[0]` to patch: not the VICO version expected")
    return text


# VICO's scripts start from real images drawn at random, unseeded. With PARITY_START set
# (accuracy.py --same-start) they start from that file's images instead: rdd's run's start.
TRAINING_BEGINS = re.compile(
    r"^([ \t]*)(print\('%s training begins'%get_time\(\)\))(\r?)$", re.MULTILINE
)


def start_from_file(text: str) -> str:
    """Before the training loop: ``image_syn`` <- the tensor in ``$PARITY_START``, if set."""
    load = (
        "if os.environ.get('PARITY_START'): image_syn.data[:] = "
        "torch.load(os.environ['PARITY_START']).to(args.device)  # rdd parity: --same-start"
    )
    text, found = TRAINING_BEGINS.subn(rf"\1{load}\3\n\1\2\3", text)
    if found != 1:
        raise BenchError(
            "no `print('%s training begins'...)` to patch: not the VICO version expected"
        )
    return text


def rewrite(path: Path, *patches: Callable[[str], str]) -> None:
    """Apply ``patches`` to ``path``, keeping its own line endings (CRLF in VICO's files)."""
    with path.open(newline="") as f:
        text = f.read()
    for patch in patches:
        text = patch(text)
    with path.open("w", newline="") as f:
        f.write(text)


def patch_vico(code: Path, script: str) -> None:
    """:func:`keep_eval_epochs`, :func:`no_update_after_the_final_evaluation`,
    :func:`start_from_file` on the script; :func:`siamese_copies` on utils.py."""
    rewrite(code / script, keep_eval_epochs, no_update_after_the_final_evaluation, start_from_file)
    rewrite(code / "utils.py", siamese_copies)


# IDM's scripts use one piece of torchnet (not in rdd's environment, and it would bring visdom):
# the running top-1 accuracy in percent that weights the CE term and is printed.
TORCHNET = '''"""Written by rdd's benchmarks/parity/accuracy.py: torchnet.meter.ClassErrorMeter, top-1."""
import types


class ClassErrorMeter:
    def __init__(self, topk=(1,), accuracy=False):
        self.accuracy = accuracy
        self.reset()

    def reset(self):
        self.correct, self.n = 0, 0

    def add(self, output, target):
        self.correct += int((output.argmax(1) == target).sum())
        self.n += len(target)

    def value(self):
        accuracy = 100.0 * self.correct / self.n
        return [accuracy if self.accuracy else 100.0 - accuracy]


meter = types.SimpleNamespace(ClassErrorMeter=ClassErrorMeter)
'''
# IDM_cifar10.py evaluates on get_eval_pool(mode, 'ConvNet', model): with --eval_mode S (itself)
# a hard-coded width-128 ConvNet whatever --model says. Any other mode evaluates --model but
# never runs (it evaluates at eval_it_pool[1:], and those modes' pool is [Iteration]).
EVAL_POOL = re.compile(r"get_eval_pool\(args\.eval_mode, 'ConvNet', args\.model\)")


def patch_idm(code: Path, script: str) -> None:
    """Make IDM's script run here and evaluate on ``--model`` (see the module docstring)."""
    path = code / script
    text, found = EVAL_POOL.subn(
        "get_eval_pool(args.eval_mode, args.model, args.model)", path.read_text()
    )
    if found != 1:
        raise BenchError(
            f"{path.name} has no line `{EVAL_POOL.pattern}` to patch: not the uitrbn/IDM "
            "version accuracy.py was written for"
        )
    path.write_text(text)
    (code / "torchnet.py").write_text(TORCHNET)
    (code / "checkpoints").mkdir(exist_ok=True)  # it os.mkdir()s its run's folder in there


# distill.py's patches, each (pattern, replacement, why). It evaluates at 0, eval_it, 2 eval_it,
# ... and saves images_best.pt only when an evaluation beats every earlier one, so the set of its
# final evaluation may never be saved; the copy evaluates (and so saves) the final set only.
MTT_PATCHES = (
    (
        re.compile(
            r"^([ \t]*)eval_it_pool = np\.arange\(0, args\.Iteration \+ 1, args\.eval_it\)\.tolist\(\)",
            re.MULTILINE,
        ),
        r"\1eval_it_pool = [args.Iteration]  # rdd parity: the final set only",
        "the evaluation schedule `eval_it_pool = np.arange(...)`",
    ),
    # its saving block moves the images to CUDA unconditionally
    (
        re.compile(r"image_save = image_syn\.cuda\(\)"),
        r"image_save = image_syn.to(args.device)  # rdd parity: any device",
        "`image_save = image_syn.cuda()`",
    ),
    # the learned step size its evaluation used is only logged to W&B; rdd.evaluate reads
    # lr_best.pt beside images_best.pt (as forks save it)
    (
        re.compile(
            r"^([ \t]*)(torch\.save\(label_syn\.cpu\(\), os\.path\.join\(save_dir, \"labels_best\.pt\".*)$",
            re.MULTILINE,
        ),
        r"\1\2\n\1torch.save(syn_lr.detach().cpu(), os.path.join(save_dir, 'lr_best.pt'))  # rdd parity",
        "the `labels_best.pt` save",
    ),
    # the loop runs it = 0..Iteration and updates after its final evaluation: stop there
    (
        re.compile(r'^([ \t]*)(wandb\.log\(\{"Synthetic_LR")', re.MULTILINE),
        r"\1if it == args.Iteration: break  # rdd parity: no update after the final evaluation\n\1\2",
        "the `Synthetic_LR` log line",
    ),
)


# buffer.py records each epoch's parameters as ``[p.detach().cpu() for p in ...]``: on a GPU
# a copy, on a CPU the live tensors themselves, so every checkpoint of a trajectory ends as the
# final parameters (start == target: distill.py's normalised loss is inf, then NaN). A clone
# makes the copy a GPU run gets.
EXPERT_SNAPSHOT = (
    re.compile(r"\[p\.detach\(\)\.cpu\(\) for p in teacher_net\.parameters\(\)\]"),
    "[p.detach().cpu().clone() for p in teacher_net.parameters()]",
    "`[p.detach().cpu() for p in teacher_net.parameters()]`",
)


def patch_mtt(code: Path, script: str) -> None:
    """:data:`MTT_PATCHES` on distill.py, :data:`EXPERT_SNAPSHOT` on buffer.py (twice: the
    start and every epoch)."""
    substitute(code / "distill.py", MTT_PATCHES, count=1)
    substitute(code / "buffer.py", (EXPERT_SNAPSHOT,), count=2)


def substitute(path: Path, patches: tuple, count: int) -> None:
    """Each ``(pattern, replacement, what)`` of ``patches`` on ``path``, found ``count`` times."""
    text = path.read_text()
    for pattern, replacement, what in patches:
        text, found = pattern.subn(replacement, text)
        if found != count:
            raise BenchError(
                f"{path.name} has {found} of {what} to patch, not {count}: not the "
                "GeorgeCazenavette/mtt-distillation version accuracy.py was written for"
            )
    path.write_text(text)


@dataclass(frozen=True)
class Reference:
    """One reference implementation: what a checkout holds and how its copy runs here."""

    repo: str
    required: tuple[str, ...]
    patch: Callable[[Path, str], None]  # (the copy's code folder, the item's script)
    final_eval_args: Callable[[int], list[str]]  # iterations -> args: evaluate the final set only
    saved_set: str  # glob under the run's folder: the set its own final evaluation scored
    env: dict[str, str] = field(default_factory=dict)  # set for its runs


REFERENCES = {
    "vico": Reference(
        "VICO-UoE/DatasetCondensation",
        ("main.py", "main_DM.py", "utils.py", "networks.py"),
        patch_vico,
        # not one of its named modes: the final set only, on the training model
        lambda iterations: ["--eval_mode", "final"],
        "result/res_*.pt",
    ),
    "idm": Reference(
        "uitrbn/IDM",
        ("IDM_cifar10.py", "dc_utils.py", "dc_networks.py", "utils.py", "networks.py")
        + ("utils_edc.py", "augment_edc.py"),
        patch_idm,
        # evaluates at iterations 0, k, 2k, ... but skips 0: k = iterations is the final set only
        lambda iterations: ["--eval_mode", "S", "--eval_interval", str(iterations)],
        # pickled when it evaluates, before the loop's last image update (res_*.pt has it: one
        # step more than the set it scored and than rdd's run)
        "code/checkpoints/*/acc_*.pkl",
    ),
    "mtt": Reference(
        "GeorgeCazenavette/mtt-distillation",
        ("buffer.py", "distill.py", "utils.py", "networks.py", "reparam_module.py"),
        patch_mtt,
        lambda iterations: [],  # patched: it evaluates the final set only
        "code/logged_files/*/*/images_best.pt",
        # distill.py logs to W&B and names its folder after the run: offline, one fixed name
        {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_NAME": "parity"},
    ),
}


def check_checkout(path: Path, name: str) -> Path:
    """``path`` if it holds the reference's files; a BenchError naming the missing ones."""
    missing = [f for f in REFERENCES[name].required if not (path / f).is_file()]
    if missing:
        raise BenchError(
            f"--{name} {path} is not a checkout of {REFERENCES[name].repo}: no {', '.join(missing)}"
        )
    return path


def make_copy(name: str, checkout: Path, code: Path, script: str) -> None:
    """Copy ``checkout`` to ``code`` with the shim, and patch the copy."""
    shutil.copytree(checkout, code, ignore=shutil.ignore_patterns(".git"))
    (code / "parity_shim.py").write_text(SHIM)
    REFERENCES[name].patch(code, script)
