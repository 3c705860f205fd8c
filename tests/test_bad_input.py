"""The bad-input suite: every case through the real command line (in process), each must end
with one line `error: ...` naming the problem and the fix, exit status 2, and leave every file
already written untouched.

Cases: configs (unknown option or key, wrong type, out-of-range values), data (missing root,
empty class folder, unreadable image, mixed sizes), files (truncated, foreign or malicious
synthetic sets, another dataset's set) and output directories (a finished run, a file in the
way, a full disk).
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import random
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from rdd.run import run
from rdd.synset import SyntheticSet
from tests.conftest import TINY, compose_config
from tests.test_synset import Payload  # unpickling it would create a file


def call_cli(module: str, argv: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """Run ``python -m <module> argv`` in this process; (exit status, non-empty stderr lines)."""
    mod = importlib.import_module(module)
    monkeypatch.setattr(sys, "argv", [mod.__file__, *argv])  # as `python -m` sets it
    with pytest.raises(SystemExit) as stop:
        mod.run_cli(mod.main)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return stop.value.code, lines


def snapshot(root: Path) -> dict[str, str]:
    """Digest of every file under root, to prove that nothing written before was touched."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real finished run (with Hydra's .hydra/ files) that no failing command may touch."""
    out = tmp_path_factory.mktemp("finished")
    run(compose_config(*TINY, "matching=random", output_dir=out))
    (out / ".hydra").mkdir()
    (out / ".hydra" / "config.yaml").write_text("# the finished run's own config\n")
    return out


def image_tree(root: Path, sizes=((8, 8), (8, 8)), corrupt=False, empty_class=False) -> Path:
    """A two-class image folder with 4 train / 2 test images per class."""
    for split, n in (("train", 4), ("test", 2)):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = sizes[(i + c) % len(sizes)]
                Image.new("RGB", (w, h), (40 * c, 10 * i, 90)).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    if empty_class:
        (root / "train" / "bird").mkdir()
    return root


Case = namedtuple("Case", "name module argv words")
DIGITS8 = ["data=digits", "data.image_size=8"]  # foreign test sets are 1x8x8

# {tmp}: this test's folder; {run}: the finished run; every argv gets its own fresh run dir.
CASES = [
    # -- configs -------------------------------------------------------------------------------
    Case("unknown option", "rdd.run", ["matching=magic"], "unknown matching 'magic'"),
    Case("unknown key", "rdd.run", ["matching.lr_imgg=1"], "unknown config key 'matching.lr_imgg'"),
    Case("wrong type int", "rdd.run", ["eval.epochs=ten"], "invalid value for eval.epochs"),
    Case(
        "wrong type float",
        "rdd.run",
        ["risk=cvar", "risk.alpha=abc"],
        "invalid value for risk.alpha",
    ),
    Case("ipc zero", "rdd.run", ["ipc=0"], "ipc must be a positive integer"),
    Case(
        "keep host memory",
        "rdd.run",
        ["trainer.keep_host_memory=maybe"],
        "trainer.keep_host_memory must be true or false",
    ),
    Case("ipc above a class", "rdd.run", ["ipc=100000"], "fewer than ipc=100000: lower ipc"),
    Case("cvar alpha", "rdd.run", ["risk=cvar", "risk.alpha=1.5"], "alpha must lie in [0, 1)"),
    Case("entropic beta", "rdd.run", ["risk=entropic", "risk.beta=-1"], "beta must be > 0"),
    Case(
        "k-means k",
        "rdd.run",
        ["risk=cvar", "clustering.k=0"],
        "clustering.k=0 gives fewer than 2 subgroups per class",
    ),
    Case(
        "group shape",
        "rdd.run",
        ["risk=cvar", "clustering.shape=smallest"],
        "clustering.shape must be one of clusters, rare_vs_rest, auto",
    ),
    Case(
        "group shape's threshold",
        "rdd.run",
        ["risk=cvar", "clustering.apart=3"],
        "clustering.apart must be a difference of silhouettes, in [-2, 2]",
    ),
    Case(
        "probe loss floor",
        "rdd.run",
        ["risk=cvar", "clustering.loss_floor=-1"],
        "clustering.loss_floor must be a number of nats >= 0",
    ),
    Case(
        "k above a class's pool",
        "rdd.run",
        ["risk=cvar", "clustering.k=300", "robust.allocation.min_images=0"],
        "clustering.k=300 is larger than the smallest class's pool",
    ),
    Case(
        "ipc below what the subgroups must own",
        "rdd.run",
        ["risk=cvar", "ipc=3", "robust.allocation.min_images=1", "clustering.shape=clusters"],
        "ipc=3 cannot give each of the 5 subgroups per class",
    ),
    Case(  # clustering.shape=auto kept its 5 clusters at the first fit (apart=2: it always does)
        "ipc below what the groups auto kept must own",
        "rdd.run",
        ["risk=cvar", "ipc=3", "robust.allocation.min_images=1", "clustering.apart=2"],
        "ipc=3 cannot give each of the 5 subgroups the clustering found",
    ),
    Case(
        "stratified minimum above a known subgroup",
        "rdd.run",
        ["risk=cvar", "clustering=known", "data.subgroup=invert"],
        "robust.min_per_group=64 is larger than the smallest known subgroup",
    ),
    Case(
        "stratified minimum zero",
        "rdd.run",
        ["risk=cvar", "robust.min_per_group=0"],
        "robust.min_per_group must be an integer >= 1",
    ),
    Case(
        "allocation cadence",
        "rdd.run",
        ["risk=cvar", "robust.allocation.every=0"],
        "robust.allocation.every must be an integer >= 1",
    ),
    Case(
        "allocation exponent",
        "rdd.run",
        ["risk=cvar", "robust.allocation.exponent=-1"],
        "robust.allocation.exponent must be > 0",
    ),
    Case(
        "represented images' step",
        "rdd.run",
        ["risk=cvar", "robust.allocation.represent_step=1.5"],
        "robust.allocation.represent_step must be in [0, 1]",
    ),
    Case(
        "start share",
        "rdd.run",
        ["risk=cvar", "robust.allocation.start_share=0"],
        "robust.allocation.start_share must be in (0, 1]",
    ),
    Case(
        "rare bound",
        "rdd.run",
        ["risk=cvar", "robust.allocation.rare_below=0"],
        "robust.allocation.rare_below must be a number of images > 0",
    ),
    Case(
        "rare cluster rule",
        "rdd.run",
        ["risk=cvar", "clustering.rare_pick=largest"],
        "clustering.rare_pick must be one of smallest, apart",
    ),
    Case(
        "rare cluster limit",
        "rdd.run",
        ["risk=cvar", "clustering.rare_pick=apart", "clustering.rare_limit=1.5"],
        "clustering.rare_limit must be a share of a class in (0, 1]",
    ),
    Case(
        "risk on networks that never train on real data",
        "rdd.run",
        ["matching=dm", "risk=cvar", "robust.targets=[networks]"],
        "no network trains on real data",
    ),
    Case(
        "networks setting outside the robust node",
        "rdd.run",
        ["matching=dsa", "matching.net_train_data=real"],
        "use robust.net_train_data=real instead of matching.net_train_data",
    ),
    Case(
        "real-data networks for a method without them",
        "rdd.run",
        ["matching=dm", "robust.net_train_data=real"],
        "robust.net_train_data=real applies to DC/DSA",
    ),
    Case(
        "unknown networks setting",
        "rdd.run",
        ["robust.net_train_data=both"],
        "unknown robust.net_train_data 'both'",
    ),
    Case(
        "one subgroup per class",
        "rdd.run",
        ["risk=cvar", "clustering=nearest_synthetic", "ipc=1"],
        "fewer than 2 subgroups per class",
    ),
    Case(
        "known subgroups without a subgroup",
        "rdd.run",
        ["risk=cvar", "clustering=known"],
        "clustering=known groups the images by their known subgroup, but there is none",
    ),
    Case("image lr", "rdd.run", ["matching.lr_img=-1"], "matching.lr_img must be positive"),
    Case(
        "mtt step size",
        "rdd.run",
        ["matching=mtt", "matching.lr_teacher=0"],
        "lr_teacher must be positive",
    ),
    Case("eval lr", "rdd.run", ["eval.lr=-0.1"], "eval.lr must be positive"),
    Case("eval epochs", "rdd.run", ["eval.epochs=0"], "eval.epochs must be positive"),
    Case("eval networks", "rdd.run", ["eval.num_nets=0"], "got 0: set e.g. eval.num_nets=5"),
    Case(
        "eval networks stacked and spread",
        "rdd.run",
        ["eval.devices=2", "eval.batched_nets=true"],
        "eval.devices=2 one per device: choose one (e.g. eval.batched_nets=null)",
    ),
    Case(
        "eval architecture",
        "rdd.run",
        ["eval.nets=[convnet,lenet]"],
        "unknown net 'lenet': choose one of alexnet, convnet, convnet_bn,",
    ),
    Case(
        "iterations", "rdd.run", ["matching.iterations=-3"], "matching.iterations must be positive"
    ),
    Case(
        "no iterations",
        "rdd.run",
        ["matching.iterations=0"],
        "got 0: set matching.iterations to a value > 0",
    ),
    Case(
        "idm queue",
        "rdd.run",
        ["matching=idm", "matching.queue_size=-1"],
        "matching.queue_size must be >= 0, got -1: set matching.queue_size to 0 or more",
    ),
    Case("expert epochs", "rdd.buffer", ["matching=mtt", "experts.epochs=0"], "experts.epochs"),
    Case(
        "buffer shorter than MTT's start epochs",
        "rdd.buffer",
        ["matching=mtt", "experts.epochs=3"],
        "experts.epochs=3 is too short for MTT",
    ),
    Case("seed", "rdd.run", ["seed=-1"], "seed must be a non-negative integer"),
    Case(
        "checkpoint interval",
        "rdd.run",
        ["checkpoint_every=-1"],
        "checkpoint_every must be a number of iterations >= 0",
    ),
    Case("gpu without a gpu", "rdd.run", ["trainer=gpu"], "no CUDA GPU is visible here: use"),
    Case(
        "comma list without --multirun",
        "rdd.run",
        ["eval.nets=convnet,resnet18"],
        "for a list write eval.nets=[convnet,resnet18], to sweep over the values add --multirun",
    ),
    Case("net option", "rdd.run", ["net.width=0"], "invalid net setting"),
    Case("severity", "rdd.run", ["eval.severities=[7]"], "eval.severities must lie in 1-5"),
    Case(
        "subgroup name", "rdd.run", ["data.subgroup=fog"], "unknown data.subgroup transform 'fog'"
    ),
    Case(
        "subgroup fraction",
        "rdd.run",
        ["data.subgroup={{transform:invert,fraction:1.5}}"],  # {{ }}: argv goes through format
        "data.subgroup.fraction=1.5 must lie in (0, 1)",
    ),
    Case(
        "grayscale subgroup of grey images",
        "rdd.run",
        ["data.subgroup=grayscale"],
        "has 1 channel(s): choose data.subgroup=invert or data.subgroup=blur",
    ),
    # -- data ----------------------------------------------------------------------------------
    Case("missing root", "rdd.run", ["data=cifar10", "data.root={tmp}/nowhere"], "does not exist"),
    Case(
        "a named dataset's root without its classes",
        "rdd.run",
        ["data=cifar10", "data.root={tmp}/folder8"],
        "holds 2 of cifar10's 10 class folders (missing: airplane, automobile, bird, deer, frog",
    ),
    Case(
        "empty class folder",
        "rdd.run",
        ["data=image_folder", "data.root={tmp}/empty"],
        "holds no images",
    ),
    Case(
        "corrupt image",
        "rdd.run",
        ["data=image_folder", "data.root={tmp}/corrupt"],
        "cannot read image",
    ),
    Case(
        "mixed sizes", "rdd.run", ["data=image_folder", "data.root={tmp}/mixed"], "data.image_size="
    ),
    # -- files ---------------------------------------------------------------------------------
    Case("missing synset", "rdd.evaluate", ["synset={tmp}/none.pt"], "not found"),
    Case(
        "truncated synset",
        "rdd.evaluate",
        ["synset={tmp}/truncated.pt"],
        "is a damaged or truncated torch.save archive",
    ),
    Case("foreign .pt", "rdd.evaluate", ["synset={tmp}/model.pt"], "not an rdd synthetic set"),
    Case("pickle payload", "rdd.evaluate", ["synset={tmp}/evil.pt"], "synset"),
    Case("code in a plain pickle", "rdd.evaluate", ["synset={tmp}/code.pt"], "holds code ("),
    Case(
        "other dataset",
        "rdd.evaluate",
        ["synset={tmp}/folder8.pt", "data_root={tmp}/mixed16"],
        "does not match the synthetic set",
    ),
    Case("no synset", "rdd.evaluate", [], "synset is not set: pass synset="),
    Case(
        "random bytes",
        "rdd.evaluate",
        ["synset={tmp}/random.pt"],
        "is neither a torch.save file nor a pickle",
    ),
    Case(
        "unknown format",
        "rdd.evaluate",
        ["synset={tmp}/plain.pt", "synset_format=dc"],
        "unknown synset_format 'dc': choose one of auto",
    ),
    Case(
        "unknown normalisation",
        "rdd.evaluate",
        ["synset={tmp}/plain.pt", *DIGITS8, "normalization=srgb"],
        "unknown normalization 'srgb'",
    ),
    Case(
        "unstated normalisation",
        "rdd.evaluate",
        ["synset={tmp}/plain.pt", *DIGITS8],
        "cannot be known: state it with normalization=",
    ),
    Case(
        "soft labels of the wrong shape",
        "rdd.evaluate",
        ["synset={tmp}/soft7.pt", *DIGITS8, "normalization=pixels"],
        "soft labels must be (N, 10)",
    ),
    Case(
        "vico experiment out of range",
        "rdd.evaluate",
        ["synset={tmp}/res_DC_MNIST_ConvNet_1ipc.pt", *DIGITS8, "exp=3"],
        "holds 2 experiment(s), choose exp=0..1",
    ),
    Case(
        "labels and images differ in count",
        "rdd.evaluate",
        ["synset={tmp}/short.pt", *DIGITS8, "normalization=pixels"],
        "10 images but 9 labels",
    ),
    Case(
        "foreign set without data",
        "rdd.evaluate",
        ["synset={tmp}/res_DC_MNIST_ConvNet_1ipc.pt"],
        "does not record its dataset (its name suggests data=mnist): pass data=",
    ),
    Case(
        "idm without factor",
        "rdd.evaluate",
        ["synset={tmp}/acc_0.5.pkl", *DIGITS8, "normalization=pixels"],
        "pass factor=2",
    ),
    Case(
        "data root of a bundled dataset",
        "rdd.evaluate",
        ["synset={run}", "data_root={tmp}/mixed16"],
        "digits is bundled with scikit-learn and reads no files; drop data_root",
    ),
    Case(
        "another dataset for an rdd set",
        "rdd.evaluate",
        ["synset={run}", "data=cifar10"],
        "comes from the set (digits), not from data=cifar10: drop data=; use data_root",
    ),
    # -- outputs -------------------------------------------------------------------------------
    Case("finished run dir", "rdd.run", ["hydra.run.dir={run}"], "already holds a run"),
    Case("a file in the way", "rdd.run", ["hydra.run.dir={tmp}/a_file/run"], "is a file"),
]


def folder_set(path: Path, root: Path) -> None:
    """A synthetic set made on the 8x8 image folder at root (2 classes, 1 image each)."""
    cfg = compose_config(*TINY, "data=image_folder", f"data.root={root}", output_dir=root / "o")
    meta = {"dataset": "image_folder", "num_classes": 2, "mean": [0.5] * 3, "std": [0.25] * 3}
    meta |= {"ipc": 1, "method": "random", "config": OmegaConf.to_yaml(cfg, resolve=True)}
    SyntheticSet(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), meta).save(path)


def foreign_sets(tmp: Path) -> None:
    """Sets as other tools write them (rdd.imports), 10 digits of 1x8x8."""
    images, labels = torch.rand(10, 1, 8, 8), torch.arange(10)
    torch.save({"images": images, "labels": labels}, tmp / "plain.pt")
    torch.save({"images": images, "labels": torch.rand(10, 7)}, tmp / "soft7.pt")
    torch.save({"images": images, "labels": labels[:9]}, tmp / "short.pt")
    res = {"data": [[images, labels], [images, labels]], "accs_all_exps": {"ConvNet": []}}
    torch.save(res, tmp / "res_DC_MNIST_ConvNet_1ipc.pt")
    (tmp / "acc_0.5.pkl").write_bytes(pickle.dumps((images, labels)))
    (tmp / "random.pt").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))


def prepare_files(tmp: Path, finished: Path) -> None:
    image_tree(tmp / "empty", empty_class=True)
    image_tree(tmp / "corrupt", corrupt=True)
    image_tree(tmp / "mixed", sizes=((8, 8), (10, 12)))
    image_tree(tmp / "mixed16", sizes=((16, 16),))
    (tmp / "a_file").write_text("not a folder")
    folder_set(tmp / "folder8.pt", image_tree(tmp / "folder8"))
    good = (finished / "synset.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(good[: len(good) // 3])
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp / "model.pt")
    foreign_sets(tmp)
    torch.save(
        {"format": "rdd-synset/1", "images": Payload(str(tmp / "executed"))},
        tmp / "evil.pt",
        pickle_module=pickle,
    )
    (tmp / "code.pt").write_bytes(pickle.dumps({"images": Payload(str(tmp / "executed"))}))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    case: Case, finished_run: Path, tmp_path, monkeypatch, capsys
) -> None:
    prepare_files(tmp_path, finished_run)
    monkeypatch.setenv("RDD_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("RDD_BUFFER_DIR", str(tmp_path / "buffers"))
    before, files_before = snapshot(finished_run), snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path, run=finished_run) for a in case.argv]
    if not any(a.startswith("hydra.") for a in argv):
        argv.append(f"hydra.run.dir={tmp_path / 'new_run'}")
    budget = TINY if case.module != "rdd.evaluate" else ["eval.epochs=1", "eval.num_nets=1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    code, lines = call_cli(case.module, [*budget, *argv], monkeypatch, capsys)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert case.words in lines[0], lines[0]
    assert snapshot(finished_run) == before  # the finished run is untouched
    after = snapshot(tmp_path)
    assert all(after.get(name) == digest for name, digest in files_before.items())
    # A failed command leaves no directory that looks like a run (Hydra made one first).
    assert not (tmp_path / "new_run").exists(), sorted((tmp_path / "new_run").rglob("*"))
    assert not (tmp_path / "executed").exists()  # the pickle payload never ran


@pytest.mark.parametrize(
    "argv",
    [
        ["eval.num_nets=0"],
        ["matching.iterations=0"],
        ["eval.devices=2", "eval.batched_nets=true"],
        ["eval.severities=[7]"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_bad_values_stop_before_the_config_tree_and_the_start_line(
    argv, tmp_path, monkeypatch, capsys
) -> None:
    """A bad value of the config is its one line on stderr, with nothing on stdout before it:
    not the end of a long config tree and a start line naming a directory that is removed."""
    monkeypatch.setenv("RDD_LOG_DIR", str(tmp_path / "logs"))
    mod = importlib.import_module("rdd.run")
    monkeypatch.setattr(sys, "argv", [mod.__file__, *argv])
    with pytest.raises(SystemExit) as stop:
        mod.run_cli(mod.main)
    out = capsys.readouterr()
    assert stop.value.code == 2 and out.err.startswith("error: "), out.err
    assert out.out == ""  # print_config is on: the tree would come first
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").rglob("*.*"))


def test_a_full_disk_is_refused_at_start_up(tmp_path, monkeypatch, capsys) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10 * 2**20))
    code, lines = call_cli(
        "rdd.run", [*TINY, f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch, capsys
    )
    assert code == 2 and len(lines) == 1 and "only 10 MiB free" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_sweep_into_a_finished_sweep_is_refused(finished_run, tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_run, sweep / "0")
    before = snapshot(sweep)
    code, lines = call_cli(
        "rdd.run", ["-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"], monkeypatch, capsys
    )
    assert code == 2 and "already holds a run" in lines[0], lines
    assert snapshot(sweep) == before


def test_mixed_channels_are_converted_not_refused(tmp_path) -> None:
    """A greyscale image among RGB ones is read as RGB (every image gets the dataset's mode)."""
    root = image_tree(tmp_path / "tree")
    Image.new("L", (8, 8), 77).save(root / "train" / "cat" / "grey.png")
    cfg = compose_config(*TINY, "data=image_folder", f"data.root={root}", output_dir=tmp_path / "o")
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    data.setup()
    assert data.channel == 3 and len(data.train_y) + len(data.val_y) == 9


def test_the_command_line_is_composed_once_and_a_bad_sweep_leaves_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    """Only Hydra composes the command line (rdd no longer composes it first); a sweep value
    that does not compose stops the sweep before its first job, and its directory goes."""
    import traceback

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    calls = []  # per composition: whether it happened inside Hydra's @hydra.main wrapper
    load = ConfigLoaderImpl.load_configuration

    def spy(*args, **kwargs):
        calls.append(any(f.name == "decorated_main" for f in traceback.extract_stack()))
        return load(*args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", spy)
    monkeypatch.setenv("RDD_LOG_DIR", str(tmp_path / "logs"))
    code, lines = call_cli("rdd.run", [*TINY, "matching.lr_imgg=1"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "unknown config key 'matching.lr_imgg'" in lines[0]
    assert calls and all(calls), calls
    code, lines = call_cli("rdd.run", ["-m", *TINY, "eval.epochs=3,x"], monkeypatch, capsys)
    assert code == 2 and len(lines) == 1 and "invalid value for eval.epochs" in lines[0], lines
    assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
