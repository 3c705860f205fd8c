"""One reader per tool: what each reference implementation writes, as a :class:`RawSet`.

The readers only unpack; :mod:`rdd.imports.convert` maps the images into rdd's input space.

- ``vico``: VICO-UoE/DatasetCondensation (DC, DSA, DM) ``main.py``/``main_DM.py`` save
  ``torch.save({'data': data_save, 'accs_all_exps': accs}, 'res_<method>_<dataset>_<model>_
  <ipc>ipc.pt')``; ``data_save`` has one ``[image_syn, label_syn]`` per experiment (``num_exp``,
  5 by default): images (N, C, H, W) normalised with the tool's per-dataset mean/std, labels
  (N,) int64 grouped by class; ``accs`` maps a model name to NumPy accuracies.
- ``idm``: uitrbn/IDM writes the same ``res_*.pt`` and, during training, the best set as
  ``checkpoints/<...>/acc_<accuracy>.pkl``: ``pickle.dump((image_syn, label_syn))`` of (CUDA)
  tensors. Its data comes from MTT's ``get_dataset`` (MTT's constants, ``--zca`` optional); with
  ``--aug`` (every published command) each stored image holds 2x2 tiles (``factor=2``).
- ``mtt``: GeorgeCazenavette/mtt-distillation ``distill.py`` saves ``images_best.pt`` and
  ``labels_best.pt`` (and ``images_<it>.pt``/``labels_<it>.pt``) as bare tensors in
  ``logged_files/<dataset>/<run>/``: images normalised with MTT's mean/std, or with ``--zca``
  ZCA-whitened raw pixels (the file does not say which); ``images_zca_<it>.pt`` are the
  whitening undone (pixels). The learned step size is only logged to W&B upstream; forks save
  it as ``lr_best.pt`` (a 0-d tensor), read when present.
- ``plain``: a torch file of ``{'images': (N, C, H, W), 'labels': (N,) or (N, K)}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.imports.files import READABLE, load_pickle, load_torch

FORMATS = ("auto", "rdd", "vico", "mtt", "idm", "plain")

# res_<method>_<dataset>_<model>_<ipc>ipc.pt, as VICO and IDM name their results.
RES_NAME = re.compile(r"res_(?P<method>[^_]+)_(?P<dataset>[^_]+)_(?P<model>.+)_(?P<ipc>\d+)ipc")
# The tools' dataset names -> rdd's data options.
TOOL_DATASETS = {
    "MNIST": "mnist",
    "FashionMNIST": "fashion_mnist",
    "SVHN": "svhn",
    "CIFAR10": "cifar10",
    "CIFAR100": "cifar100",
}


@dataclass
class RawSet:
    """A foreign set as its file holds it.

    Attributes:
        images: (N, C, H, W) float, in the tool's normalisation.
        labels: (N,) int64 class indices, or (N, K) float soft labels.
        fmt: the format read (vico | idm | mtt | plain).
        normalization: the tool's normalisation when the file fixes it (``vico``, ``mtt``,
            ``pixels``), None when it cannot be known from the file.
        lr: a learned evaluation step size (MTT), or None.
        method: what made the set, in rdd's lower case (``dc`` from ``res_DC_...``, else the
            format), so that tables and summaries name it as rdd's own methods.
        detail: where in the file the set came from, for the output.
        dataset: the rdd data option the file name suggests (``res_*_CIFAR10_*``), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    fmt: str
    normalization: str | None
    lr: float | None = None
    method: str = ""
    detail: str = ""
    dataset: str | None = None


def detect_format(path: Path) -> str:
    """The format of a file or directory by its name and, for torch files, its contents."""
    if path.is_dir():
        if (path / "synset.pt").is_file():
            return "rdd"
        if (path / "images_best.pt").is_file():
            return "mtt"
        raise UserError(
            f"'{path}' holds neither synset.pt (rdd) nor images_best.pt (MTT): pass the file "
            "itself as synset=<file>"
        )
    if path.suffix == ".pkl":
        return "idm"
    if path.name.startswith("images_"):
        return "mtt"
    payload = load_torch(path)
    if isinstance(payload, dict) and "format" in payload:
        return "rdd"
    if isinstance(payload, dict) and "data" in payload:
        return "vico"  # IDM's res files have the same layout: synset_format=idm
    if isinstance(payload, dict) and {"images", "labels"} <= payload.keys():
        return "plain"
    raise UserError(
        f"'{path}' is not an rdd synthetic set nor a set rdd can import (no 'data' list, no "
        f"images/labels); {READABLE}; or name it with synset_format=<{'|'.join(FORMATS[1:])}>"
    )


def read_vico(path: Path, experiment: int) -> RawSet:
    """One experiment of a VICO ``res_*.pt`` (``experiment`` indexes ``data``)."""
    raw = _read_res(path, experiment, "vico")
    raw.normalization = "vico"  # VICO has no ZCA: always its per-dataset mean/std
    return raw


def read_idm(path: Path, experiment: int) -> RawSet:
    """IDM's ``res_*.pt`` (one experiment) or ``acc_*.pkl`` (the best set of a run)."""
    if path.suffix == ".pkl":
        payload = load_pickle(path)
        if not (isinstance(payload, tuple) and len(payload) == 2):
            raise UserError(
                f"'{path}' is not an IDM checkpoint (expected a pickled (images, labels) "
                "tuple): pass the acc_*.pkl IDM wrote, or its res_*.pt"
            )
        images, labels = _tensors(payload[0], payload[1], path)
        return RawSet(images, labels, "idm", None, method="idm", detail="best set (acc_*.pkl)")
    return _read_res(path, experiment, "idm")


def _read_res(path: Path, experiment: int, fmt: str) -> RawSet:
    payload = load_torch(path)
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise UserError(
            f"'{path}' is not a {fmt} res_*.pt (no non-empty 'data' list of [images, labels]); "
            f"{READABLE}"
        )
    if not 0 <= experiment < len(data):
        raise UserError(
            f"exp={experiment} is out of range: '{path.name}' holds {len(data)} "
            f"experiment(s), choose exp=0..{len(data) - 1}"
        )
    pair = data[experiment]
    if not (isinstance(pair, list | tuple) and len(pair) == 2):
        raise UserError(f"'{path}' experiment {experiment} is not an [images, labels] pair")
    images, labels = _tensors(pair[0], pair[1], path)
    named = RES_NAME.match(path.stem)
    method = named["method"].lower() if named else fmt
    dataset = TOOL_DATASETS.get(named["dataset"]) if named else None
    detail = f"experiment {experiment} of {len(data)}"
    return RawSet(images, labels, fmt, None, method=method, detail=detail, dataset=dataset)


def read_mtt(path: Path) -> RawSet:
    """MTT's images file (or its directory, taken as ``images_best.pt``) with its labels and,
    where present, learned step size beside it."""
    images_file = path / "images_best.pt" if path.is_dir() else path
    tag = images_file.stem.removeprefix("images_").removeprefix("zca_")
    labels_file = images_file.with_name(f"labels_{tag}.pt")
    if not labels_file.is_file():
        raise UserError(
            f"MTT labels '{labels_file}' not found: MTT saves them beside {images_file.name}; "
            "copy them there"
        )
    images, labels = _tensors(load_torch(images_file), load_torch(labels_file), images_file)
    lr_file = images_file.with_name(f"lr_{tag}.pt")
    lr = None
    if lr_file.is_file():
        value = load_torch(lr_file)
        if not (isinstance(value, torch.Tensor) and value.numel() == 1):
            raise UserError(f"'{lr_file}' is not a learned step size (one number)")
        lr = float(value.detach())
    # images_zca_<it>.pt is MTT's whitening undone: plain pixels.
    pixels = images_file.stem.startswith("images_zca_")
    return RawSet(images, labels, "mtt", "pixels" if pixels else None, lr, "mtt", images_file.name)


def read_plain(path: Path) -> RawSet:
    """A torch file of ``{'images', 'labels'}`` (other keys are ignored)."""
    payload = load_torch(path)
    if not (isinstance(payload, dict) and {"images", "labels"} <= payload.keys()):
        raise UserError(
            f"'{path}' is not a plain set (a dict with 'images' and 'labels'); {READABLE}"
        )
    images, labels = _tensors(payload["images"], payload["labels"], path)
    return RawSet(images, labels, "plain", None, method="plain", detail=path.name)


def _tensors(images: Any, labels: Any, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point()):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"'{path}': the images must be a float (N, C, H, W) tensor, got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.ndim not in (1, 2):
        raise UserError(f"'{path}': the labels must be a (N,) or (N, K) tensor")
    if len(labels) != len(images):
        raise UserError(
            f"'{path}' has {len(images)} images but {len(labels)} labels: every image needs "
            "exactly one label; fix the file"
        )
    images = images.detach().float().cpu()
    labels = labels.detach().cpu()
    return images, labels.float() if labels.ndim == 2 else labels.long()
