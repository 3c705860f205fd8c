"""Where the Hydra configs live."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from rdd.config.errors import UserError

# conf/ sits at the repository root, next to src/ (editable installs and checkouts).
# Inside the package, so that an installed rdd (a wheel, `pip install` from a clone) has them.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def build(node: Any, group: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``, with a constructor's ValueError (an invalid
    option value) turned into a one-line UserError that names the config group."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        if isinstance(cause, ValueError):
            raise UserError(f"invalid {group} setting: {cause}") from None
        raise


# Files that mark a finished run (a stopped run's synset.pt counts: it is its last good set).
FINISHED_MARKERS = ("synset.pt", "metrics.json")


def check_fresh(out_dir: Path, multirun: bool = False) -> None:
    """Refuse an output directory that holds a finished run (for a sweep: any of its jobs'),
    before Hydra writes its own files there; nothing already written is ever overwritten."""
    runs = [out_dir] if not multirun else [out_dir, *out_dir.glob("*")]
    done = sorted(str(d / n) for d in runs for n in FINISHED_MARKERS if (d / n).exists())
    if done:
        raise UserError(
            f"output directory '{out_dir}' already holds a run ({', '.join(done[:2])}"
            f"{', ...' if len(done) > 2 else ''}): choose a new hydra.run.dir / hydra.sweep.dir "
            "(or leave it unset for a fresh one)"
        )


# Below this much free space a run would die on its first checkpoint or synthetic set.
MIN_FREE_MIB = 256


def check_writable(path: str | Path) -> None:
    """The output directory (or the nearest folder of it that exists) takes files and has
    room: an unwritable or full disk is an error at start-up, not after hours of work."""
    folder = Path(path).expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(
            f"cannot create the output directory '{path}': '{folder}' is a file; choose another "
            "hydra.run.dir (or hydra.sweep.dir)"
        )
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"rdd")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise UserError(
            f"cannot write to '{folder}' ({err.strerror}): choose a writable hydra.run.dir "
            "(or hydra.sweep.dir)"
        ) from None
    free_mib = shutil.disk_usage(folder).free / 2**20
    if free_mib < MIN_FREE_MIB:
        raise UserError(
            f"only {free_mib:.0f} MiB free where the run would write ('{folder}'): free some "
            f"space (at least {MIN_FREE_MIB} MiB) or choose another hydra.run.dir"
        )


def compose_or_explain(config_name: str, overrides: list[str]) -> DictConfig:
    """The composed config (with Hydra's own node), or a one-line UserError saying why not."""
    from hydra import compose, initialize_config_dir

    from rdd.config.schemas import register_schemas

    register_schemas()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except Exception as err:
        raise UserError(explain(err)) from None


def explain(err: Exception) -> str:
    """One line from Hydra's and OmegaConf's multi-line composition errors."""
    cause = err.__cause__ or err
    text = str(cause)
    if text.startswith("Ambiguous value for argument"):
        # Hydra: a comma list without --multirun (e.g. eval.nets=convnet,resnet18).
        arg = text.split("'")[1] if text.count("'") >= 2 else "key=a,b"
        key, _, values = arg.partition("=")
        return (
            f"'{arg}' is ambiguous: for a list write {key}=[{values}], to sweep over the values "
            f"add --multirun, for one string quote it: {key}='\"{values}\"'"
        )
    key = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "full_key:" in ln), "")
    if "not in" in text or "Could not override" in str(err) or "Could not append" in text:
        quoted = first_line(err).split("'")
        name = key or (quoted[1] if len(quoted) > 2 else "?")
        return (
            f"unknown config key '{name}': check its spelling (the keys of each option are in "
            "conf/<group>/<option>.yaml); add new keys with +key=value"
        )
    if "could not be converted" in text or "Value '" in text:
        return f"invalid value for {key or 'a key'}: {first_line(cause)}: give a value of that type"
    return f"{first_line(err)}: {first_line(cause)}" if cause is not err else first_line(err)


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, sub in tree.items():
        flat |= flatten(sub, f"{prefix}{key}.")
    return flat


@contextmanager
def app_configs() -> Iterator[Any]:
    """Hydra's config repository: the running app's (with its search path, so an option a user
    adds with ``hydra.searchpath``/``--config-dir`` is found too), else rdd's own."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rdd.config.schemas import register_schemas  # the option files start from these schemas

    register_schemas()
    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance()
        return
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance()


def app_searchpath() -> list[str]:
    """The running app's ``hydra.searchpath`` as an override (none outside an app)."""
    from hydra.core.hydra_config import HydraConfig

    paths = list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []
    return [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []


def group_options(group: str) -> list[str]:
    """The options of a config group, as Hydra finds them (rdd.config.schemas' entries left out)."""
    with app_configs() as hydra_configs:
        options = hydra_configs.config_loader().get_group_options(group)
    return sorted(o for o in options if not o.endswith("_schema"))


def compose_in_app(config_name: str, overrides: list[str]) -> DictConfig:
    """``config_name`` composed with ``overrides`` by the running app's Hydra (inside a command
    such as rdd.evaluate), else by rdd's own configs."""
    from hydra import compose

    with app_configs():
        return compose(config_name=config_name, overrides=[*overrides, *app_searchpath()])
