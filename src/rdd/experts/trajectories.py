"""Reading expert trajectories back (memory-mapped) and handing them to MTT."""

from __future__ import annotations

import pickle
import shlex
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rdd.config.errors import UserError
from rdd.experts.store import FORMAT, ExpertStore, store_for


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
    store = store_for(cfg, data)
    paths = store.finished()
    if not paths:
        raise UserError(
            f"no expert trajectories for this config in '{store.directory}': make them first "
            f"with `{buffer_command()}`{nearest_hint(store)}"
        )
    matcher.attach(Trajectories(paths))


def nearest_hint(store: ExpertStore) -> str:
    """Name the settings in which the closest existing buffer differs (often one override)."""
    nearest = store.nearest_other()
    if nearest is None:
        return ""
    folder, differing = nearest
    shown = ", ".join(differing[:6]) + (", ..." if len(differing) > 6 else "")
    return f" (the nearest buffer there, '{folder.name}', differs in: {shown})"


def buffer_command() -> str:
    """The `rdd.buffer` command line with this run's overrides (they select the buffer)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "python -m rdd.buffer <the overrides of this run>"
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    return shlex.join(["python", "-m", "rdd.buffer", *overrides])
