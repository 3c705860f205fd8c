"""Finding and reading finished run directories (``config.yaml`` + ``metrics.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rdd.config.errors import UserError
from rdd.outputs.files import read_metrics


@dataclass
class Run:
    """One finished run directory: its resolved config, metrics and per-network details."""

    path: Path
    config: DictConfig
    metrics: dict[str, float]
    details: dict[str, Any] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return OmegaConf.select(self.config, key, default=default)

    @property
    def method(self) -> str:
        """The matching method; a set imported from another tool (evaluated by rdd.evaluate)
        is marked, so that it gets a row of its own beside rdd's runs of that method."""
        name = str(self.get("matching.name", "?"))
        return f"{name} (imported)" if self.get("imported") is not None else name

    @property
    def dataset(self) -> str:
        """The dataset's name, with the transform of its known rare subgroup when the run has
        one (``digits+invert``): such runs are another benchmark, not seeds of the clean one."""
        name, subgroup = str(self.get("data.name", "?")), self.get("data.subgroup")
        if subgroup is None:
            return name
        return f"{name}+{subgroup if isinstance(subgroup, str) else subgroup.get('transform')}"

    @property
    def key(self) -> tuple[str, str, int | str | None, str]:
        """(dataset, method, ipc, risk); the whole-dataset reference has no ipc, an imported
        set with unequal images per class has ipc "mixed"."""
        ipc = self.get("ipc", 0)
        ipc = None if self.method == "full" else ipc if isinstance(ipc, str) else int(ipc)
        return self.dataset, self.method, ipc, str(self.get("risk.name", "none"))

    @property
    def seed(self) -> int:
        return int(self.get("seed", 0))

    @property
    def complete(self) -> bool:
        """False for an evaluation that was interrupted (metrics.json has its figures so far)."""
        return self.metrics.get("eval_complete", True) is not False


def scan_runs(dirs: Iterable[str | Path]) -> tuple[list[Run], list[Path]]:
    """Finished runs under ``dirs`` (recursively) and the directories of unfinished ones (no
    metrics.json, or an interrupted evaluation: its figures would average fewer networks)."""
    runs, unfinished = [], []
    for root in map(Path, dirs):
        if not root.is_dir():
            raise UserError(
                f"directory '{root}' does not exist: pass a run or Hydra multirun directory "
                "(e.g. logs/distill/multiruns)"
            )
        for path in run_dirs(root):
            run = load_run(path) if (path / "metrics.json").is_file() else None
            if run is not None and run.complete:
                runs.append(run)
            else:  # not evaluated yet, or its evaluation was interrupted
                unfinished.append(path)
    return sorted(runs, key=lambda r: (sort_key(r.key), r.seed, str(r.path))), unfinished


def find_runs(dirs: Iterable[str | Path]) -> list[Run]:
    """Every finished run (config.yaml and metrics.json) under ``dirs``."""
    return scan_runs(dirs)[0]


def run_dirs(root: Path) -> Iterable[Path]:
    """Directories that are runs, finished or not; a run's own subfolders are not searched."""
    if (root / "config.yaml").is_file() or (root / ".hydra").is_dir():
        yield root
        return
    for child in sorted(root.iterdir()):
        # Hidden folders (.hydra) and W&B folders hold config.yaml files that are not runs.
        if child.is_dir() and not child.name.startswith(".") and child.name != "wandb":
            yield from run_dirs(child)


def load_run(path: Path) -> Run:
    """Read one run directory; a config.yaml missing from a finished run is a user error."""
    if not (path / "config.yaml").is_file():
        if (path / "synset_source.json").is_file():  # rdd.evaluate wrote no config.yaml before
            raise UserError(
                f"'{path}' was written by an older rdd.evaluate (no config.yaml): evaluate the "
                "set again (its path is in synset_source.json) or remove that directory"
            )
        raise UserError(f"run '{path}' has metrics.json but no config.yaml: restore or remove it")
    details_path = path / "eval_details.json"
    return Run(
        path=path,
        config=OmegaConf.load(path / "config.yaml"),
        metrics=read_metrics(path / "metrics.json"),
        details=read_json(details_path) if details_path.is_file() else None,
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"'{path}' is not valid JSON ({err}): rerun or remove that run") from None


def sort_key(key: tuple[str, str, int | str | None, str]) -> tuple:
    """Dataset, method, ipc ("mixed", then the whole-dataset 'all' last), risk with the base
    'none' first."""
    dataset, method, ipc, risk = key
    numeric = ipc if isinstance(ipc, int) else 0
    return dataset, method, ipc is None, isinstance(ipc, str), numeric, risk != "none", risk
