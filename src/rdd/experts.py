"""Expert trajectories for MTT: where a buffer lives, its file format, and reading it back.

A buffer is a folder of experts, one file each, holding the expert's flattened parameters at
the start and after every epoch: ``(epochs + 1, P)`` float32. The folder's name ends in a hash
of everything that changes the trajectories (dataset, ZCA, network, expert training settings,
and the risk when experts train on it), so a distillation run finds the buffer made for its
own config and never one made for another. ``key.json`` in the folder spells the hash out.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rdd.errors import UserError
from rdd.io import atomic_write, write_json
from rdd.nets import net_name

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


def experts_train_on_risk(cfg: Any) -> bool:
    """Robust experts: a real risk (not the mean) that acts on networks (experts train on
    real data, so ``robust.targets: null`` includes them)."""
    from rdd.robust import resolve_targets  # rdd.robust imports the config layer

    return resolve_targets(cfg.risk, cfg.robust.targets, trains_on_real=True).networks


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
    def finished(self) -> list[Path]:
        """Finished expert files, in index order."""
        if not (self.directory / KEY_FILE).is_file():
            return []
        return sorted(self.directory.glob("expert_[0-9][0-9][0-9][0-9][0-9].pt"))


def flat_parameters(net: nn.Module) -> torch.Tensor:
    """All parameters of ``net`` in ``named_parameters`` order, as one detached CPU vector."""
    return torch.cat([p.detach().reshape(-1).cpu() for p in net.parameters()])


class Trajectories:
    """Read-only access to the experts of a buffer; files are memory-mapped, so a lookup reads
    two snapshots, not whole trajectories."""

    def __init__(self, paths: list[Path]) -> None:
        if not paths:
            raise ValueError("no expert files")
        self.paths = list(paths)
        self._open: dict[int, torch.Tensor] = {}
        first = self._params(0)
        self.epochs = first.shape[0] - 1
        self.num_params = first.shape[1]

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:  # memory maps do not travel to DDP processes
        return {"paths": self.paths, "epochs": self.epochs, "num_params": self.num_params}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open = {}

    def _params(self, expert: int) -> torch.Tensor:
        if expert not in self._open:
            path = self.paths[expert]
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
                raise UserError(
                    f"expert file '{path}' is unreadable ({type(err).__name__}): delete it and "
                    "run python -m rdd.buffer again to re-train it"
                ) from None
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise UserError(
                    f"'{path}' is not an rdd expert trajectory: delete it and run python -m rdd.buffer"
                )
            self._open[expert] = payload["params"]
        return self._open[expert]

    def snapshot(self, expert: int, epoch: int) -> torch.Tensor:
        """Flat parameters (P,) of ``expert`` after ``epoch`` epochs (0: its initialisation)."""
        params = self._params(expert)
        if params.shape[1] != self.num_params or not 0 <= epoch < params.shape[0]:
            raise UserError(
                f"expert file '{self.paths[expert]}' has {params.shape[0] - 1} epochs of "
                f"{params.shape[1]} parameters, not what the buffer's first expert has: delete it "
                "and run python -m rdd.buffer again"
            )
        return params[epoch].clone()


def unflatten(flat: torch.Tensor, net: nn.Module) -> dict[str, torch.Tensor]:
    """Split a flat parameter vector into ``net``'s named parameter shapes."""
    shapes = [(name, p.shape) for name, p in net.named_parameters()]
    sizes = [s.numel() for _, s in shapes]
    if sum(sizes) != flat.numel():
        raise UserError(
            f"the expert buffer holds {flat.numel()} parameters per snapshot but the network has "
            f"{sum(sizes)}: the buffer was made for another net; run python -m rdd.buffer for this config"
        )
    return {
        name: chunk.view(shape)
        for (name, shape), chunk in zip(shapes, flat.split(sizes), strict=True)
    }


def attach_experts(cfg: Any, data: Any, matcher: Any) -> None:
    """Give MTT the expert trajectories made for this config, or say how to make them."""
    store = ExpertStore.locate(cfg.experts.root, buffer_key(cfg, data, net_name(cfg)))
    paths = store.finished()
    if not paths:
        raise UserError(
            f"no expert trajectories for this config in '{store.directory}': make them first "
            f"with `{buffer_command()}`"
        )
    matcher.attach(Trajectories(paths))


def buffer_command() -> str:
    """The `rdd.buffer` command line with this run's overrides (they select the buffer)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "python -m rdd.buffer <the overrides of this run>"
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    return shlex.join(["python", "-m", "rdd.buffer", *overrides])
