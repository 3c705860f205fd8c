"""Which evaluation protocol rdd.evaluate uses: the set's own, with the user's changes on top.

A set made by rdd.run stores its whole config, so its evaluation can be reproduced exactly;
only the ``eval`` keys the user gives on the command line change it (``eval.epochs=300``), and
a group choice (``eval=cross_arch``) applies what that option changes relative to
``eval/default`` (its ``nets``), not the rest of its defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rdd.config.compose import CONF_DIR, compose_in_app, flatten, group_options
from rdd.config.schemas import EvalSchema


def task_overrides(cfg: DictConfig, overrides: Sequence[str] | None = None) -> list[str]:
    """The command line's overrides: given, from a config composed with its Hydra node, or
    from the running Hydra app; none when composed without Hydra."""
    if overrides is not None:
        return list(overrides)
    if "hydra" in cfg:
        return list(cfg.hydra.overrides.task)
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def explicit_eval(composed: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """Flattened ``eval`` keys (``partition.k``) the overrides set, with their composed values.

    Args:
        composed: the composed ``eval`` node (the group option plus ``eval.*`` overrides).
        overrides: Hydra override strings (``eval.epochs=2``, ``eval=cross_arch``, ``+eval.x=1``).
    """
    flat = flatten(OmegaConf.to_container(composed, resolve=True))
    keys: set[str] = set()
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "eval" and item.split("=", 1)[-1] not in ("default", "eval_schema"):
            default = flatten(default_eval())
            keys |= {k for k, v in flat.items() if default.get(k, object()) != v}
        elif key.startswith("eval."):
            name = key.removeprefix("eval.")
            keys |= {k for k in flat if k == name or k.startswith(f"{name}.")}
    return {k: flat[k] for k in sorted(keys)}


def default_eval() -> dict[str, Any]:
    """``conf/eval/default.yaml`` over its schema, as a plain dict."""
    own = OmegaConf.load(CONF_DIR / "eval" / "default.yaml")
    own.pop("defaults", None)
    merged = OmegaConf.merge(OmegaConf.structured(EvalSchema), own)
    return OmegaConf.to_container(merged, resolve=True)


def stored_protocol(
    composed: DictConfig, stored: DictConfig | None, explicit: dict[str, Any]
) -> DictConfig:
    """The protocol to evaluate with: the stored one (keys the current protocol no longer has
    are dropped, keys it lacks come from ``composed``), then the explicit keys.

    Args:
        composed: the composed ``eval`` node; stored: the set's ``eval`` (None: none stored).
        explicit: :func:`explicit_eval`.
    """
    current = flatten(OmegaConf.to_container(composed, resolve=True))
    merged = dict(current)
    if stored is not None:
        for key, value in flatten(OmegaConf.to_container(stored, resolve=True)).items():
            if key in current:
                merged[key] = value
    merged |= explicit
    tree = OmegaConf.create()
    for key, value in merged.items():
        OmegaConf.update(tree, key, value, force_add=True)
    return tree


def data_option(overrides: Sequence[str]) -> str | None:
    """The ``data`` option the command line chose (``data=cifar10``), or None."""
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+") == "data" and value:
            return value
    return None


def run_protocol(data: str, method: str) -> tuple[DictConfig, str]:
    """The ``eval`` node rdd.run composes for ``data=<data>`` (with that dataset's CPU budget,
    budget/<data>.yaml) and, where rdd has the method, ``matching=<method>``; and that command,
    to say in the output which rdd runs an imported set is scored like."""
    overrides = [f"data={data}"]
    if method in group_options("matching"):
        overrides.append(f"matching={method}")
    return compose_in_app("run", overrides).eval, f"python -m rdd.run {' '.join(overrides)}"


def explicit_note(explicit: dict[str, Any]) -> str:
    """``; eval.epochs=2 from the command line`` (empty without explicit eval keys)."""
    if not explicit:
        return ""
    return "; " + " ".join(f"eval.{k}={v}" for k, v in explicit.items()) + " from the command line"


def imported_protocol(
    composed: DictConfig, overrides: Sequence[str], method: str
) -> tuple[DictConfig, str]:
    """The protocol of rdd.run on the same dataset (its budget there, e.g. digits' 3 networks x
    300 epochs) and method, the runs an imported set is compared with; ``eval.*`` given on the
    command line on top. Returns it and a line saying which it is.

    Args:
        composed: rdd.evaluate's composed ``eval`` node; overrides: its command line;
        method: what made the set (``dc``).
    """
    explicit = explicit_eval(composed, overrides)
    data = data_option(overrides)
    if data is None:  # data composed some other way: nothing to match, conf/eval as composed
        return composed, f"conf/eval{explicit_note(explicit)}"
    run_eval, command = run_protocol(data, method)
    protocol = stored_protocol(composed, run_eval, explicit)
    return protocol, f"as `{command}` evaluates its sets{explicit_note(explicit)}"
