"""Where an MTT expert buffer lives and its file format.

A buffer is a folder of experts, one file each, holding the expert's flattened parameters at
the start and after every epoch: ``(epochs + 1, P)`` float32. The folder's name ends in a hash
of everything that changes the trajectories (dataset, ZCA, network, expert training settings,
and the risk when experts train on it), so a distillation run finds the buffer made for its
own config and never one made for another. ``key.json`` in the folder spells the hash out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.nets import legacy_net_names, net_name
from rdd.utils.io import atomic_write, write_json

log = logging.getLogger(__name__)

FORMAT = "rdd-expert/1"
PARTIAL_FORMAT = "rdd-expert-partial/1"
KEY_FILE = "key.json"


def buffer_key(cfg: Any, data: Any, net_name: str) -> dict[str, Any]:
    """Everything that changes an expert's trajectory (not how many experts there are)."""
    from omegaconf import OmegaConf

    experts = OmegaConf.to_container(cfg.experts, resolve=True)
    for unrelated in ("num_experts", "root"):  # where and how many, not what
        experts.pop(unrelated, None)
    experts["dsa_strategy"] = experts.get("dsa_strategy") or data.dsa_strategy
    zca = getattr(data, "zca", None) is not None
    key = {
        "format": FORMAT,
        "data": {
            "name": data.name,
            "classes": list(data.class_names),
            "image_size": list(data.im_size),
            "train_size": len(data.train_y),
            "mean": list(data.mean),
            "std": list(data.std),
            "val_fraction": data.val_fraction,
            "split_seed": data.split_seed,
            "zca": zca,
            "zca_eps": float(data.zca_eps) if zca else None,
        },
        "net": {"name": net_name, **OmegaConf.to_container(cfg.net, resolve=True)},
        "experts": experts,
        "risk": None,
    }
    if data.subgroup is not None:  # experts train on the altered split; others keep their key
        key["data"]["subgroup"] = data.subgroup.key()
    if experts_train_on_risk(cfg):
        key["risk"] = {
            "risk": OmegaConf.to_container(cfg.risk, resolve=True),
            "clustering": OmegaConf.to_container(cfg.clustering, resolve=True),
        }
    return key


def store_for(cfg: Any, data: Any) -> ExpertStore:
    """The buffer of this config, found under the net's earlier name too (and moved to its
    folder now): buffers made before the name depended on the config alone stay usable."""
    legacy = [buffer_key(cfg, data, name) for name in legacy_net_names(cfg)]
    return ExpertStore.find(cfg.experts.root, buffer_key(cfg, data, net_name(cfg)), legacy)


def experts_train_on_risk(cfg: Any) -> bool:
    """Robust experts: a real risk (not the mean) that acts on networks (experts train on
    real data, so ``robust.targets: null`` includes them)."""
    from rdd.robust.plan import resolve_targets  # rdd.robust.plan imports the config layer

    return resolve_targets(cfg.risk, cfg.robust.targets, trains_on_real=True).networks


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{name}" if prefix else name))
    return flat


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ExpertStore:
    """The buffer folder for one key."""

    directory: Path
    key: dict[str, Any]

    @classmethod
    def locate(cls, root: str | Path, key: dict[str, Any]) -> ExpertStore:
        """The folder under ``root`` for ``key``: ``<data>-<net>-<zca|plain>-<risk>-<hash>``."""
        data, risk = key["data"], key["risk"]
        parts = [
            data["name"],
            key["net"]["name"],
            "zca" if data["zca"] else "plain",
            risk["risk"]["name"] if risk else "mean",
            key_digest(key),
        ]
        return cls(Path(root).expanduser() / "-".join(parts), key)

    @classmethod
    def find(cls, root: str | Path, key: dict[str, Any], legacy: list[dict]) -> ExpertStore:
        """The store for ``key``; a buffer kept under one of the ``legacy`` keys is renamed to
        key's folder (its key.json rewritten), or read where it is if it cannot be moved."""
        store = cls.locate(root, key)
        for old_key in legacy:
            if store.holds(old_key):  # moved by a migration stopped before it rewrote the key
                write_json(store.directory / KEY_FILE, key)
            old = cls.locate(root, old_key)
            if store.directory.exists() or not old.holds(old_key):
                continue
            try:
                old.directory.rename(store.directory)
            except OSError:  # e.g. a shared read-only buffer: use it under its old name
                return old
            write_json(store.directory / KEY_FILE, key)
            log.info("expert buffer '%s' renamed to '%s'", old.directory, store.directory.name)
            return store
        return store

    def holds(self, key: dict[str, Any]) -> bool:
        """Whether the folder's key.json is ``key``."""
        try:
            return json.loads((self.directory / KEY_FILE).read_text()) == json.loads(
                json.dumps(key)
            )
        except (OSError, ValueError):
            return False

    # -- writing (rdd.buffer) -----------------------------------------------------------------
    def claim(self) -> None:
        """Create the folder and its key file, or check that an existing folder has our key."""
        path = self.directory / KEY_FILE
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored != json.loads(json.dumps(self.key)):
                raise UserError(
                    f"expert buffer '{self.directory}' holds experts of another config (its "
                    f"{KEY_FILE} differs): move that folder away or set experts.root elsewhere"
                )
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json(path, self.key)

    def expert_path(self, index: int) -> Path:
        return self.directory / f"expert_{index:05d}.pt"

    def partial_path(self, index: int) -> Path:
        return self.directory / f"expert_{index:05d}.partial.pt"

    def save_expert(self, index: int, trajectory: torch.Tensor, names: list[str]) -> Path:
        """Write a finished expert atomically and drop its partial checkpoint."""
        payload = {"format": FORMAT, "params": trajectory.contiguous(), "names": names}
        path = atomic_write(self.expert_path(index), lambda tmp: torch.save(payload, tmp))
        self.partial_path(index).unlink(missing_ok=True)
        return path

    def save_partial(self, index: int, state: dict[str, Any]) -> None:
        payload = {"format": PARTIAL_FORMAT, **state}
        atomic_write(self.partial_path(index), lambda tmp: torch.save(payload, tmp))

    def load_partial(self, index: int) -> dict[str, Any] | None:
        """An unfinished expert's checkpoint, or None (absent or unreadable: start it over)."""
        path = self.partial_path(index)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError):
            return None
        return payload if payload.get("format") == PARTIAL_FORMAT else None

    # -- reading (matching=mtt) ---------------------------------------------------------------
    def nearest_other(self) -> tuple[Path, list[str]] | None:
        """The buffer beside this one whose key differs in the fewest settings, with those
        settings (dotted names): what a user most likely meant to match."""
        ours = flatten(json.loads(json.dumps(self.key)))
        best: tuple[Path, list[str]] | None = None
        for key_file in sorted(self.directory.parent.glob(f"*/{KEY_FILE}")):
            if key_file.parent == self.directory:
                continue
            try:
                theirs = flatten(json.loads(key_file.read_text()))
            except (OSError, ValueError):
                continue
            differing = sorted(
                k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)
            )
            if best is None or len(differing) < len(best[1]):
                best = (key_file.parent, differing)
        return best

    def finished(self) -> list[Path]:
        """Finished expert files, in index order."""
        if not (self.directory / KEY_FILE).is_file():
            return []
        return sorted(self.directory.glob("expert_[0-9][0-9][0-9][0-9][0-9].pt"))
