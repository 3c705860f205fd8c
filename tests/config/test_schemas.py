"""One source per config value: schemas come from the constructors, YAML files list only what
differs, and the composed defaults are the constructors' defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf

from rdd.config.compose import CONF_DIR
from rdd.config.schemas import GENERATED, schema_for, signature_defaults, target_class
from tests.conftest import compose_config

SCHEMA_GROUPS = ("data", "net", "matching", "risk", "clustering", "eval", "robust")
OPTION_FILES = sorted(p for g in SCHEMA_GROUPS for p in (CONF_DIR / g).glob("*.yaml"))


def parent_node(group: str, yaml_file: Path):
    """What the file's first defaults entry gives before the file's own keys are applied."""
    parent = OmegaConf.load(yaml_file).defaults[0]
    if parent.endswith("_schema"):
        return schema_node(group, parent)
    return compose_config(f"{group}={parent}", "data=cifar10")[group]


def schema_node(group: str, schema: str):
    if (group, schema) in GENERATED:
        path, exclude = GENERATED[(group, schema)]
        return OmegaConf.structured(schema_for(target_class(path), exclude))
    from rdd.config import schemas

    by_name = {"eval_schema": schemas.EvalSchema, "robust_schema": schemas.RobustSchema}
    by_name["none_schema"] = schemas.ClusteringNoneSchema
    return OmegaConf.structured(by_name[schema])


@pytest.mark.parametrize("yaml_file", OPTION_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_option_file_sets_only_what_differs_from_its_defaults(yaml_file: Path) -> None:
    group = yaml_file.parent.name
    own = OmegaConf.to_container(OmegaConf.load(yaml_file), resolve=False)
    own.pop("defaults")
    parent = OmegaConf.to_container(parent_node(group, yaml_file), resolve=False)
    repeated = {k: v for k, v in own.items() if k in parent and parent[k] == v}
    assert not repeated, f"{group}/{yaml_file.stem} repeats its defaults: {repeated}"
    assert set(own) <= set(parent), f"unknown keys in {yaml_file}: {set(own) - set(parent)}"


@pytest.mark.parametrize(("group", "schema"), sorted(GENERATED))
def test_a_generated_schema_is_the_constructor_signature(group: str, schema: str) -> None:
    path, exclude = GENERATED[(group, schema)]
    cls = target_class(path)
    fields = {f.name: f for f in dataclasses.fields(schema_for(cls, exclude))}
    assert fields.pop("_target_").default == path
    defaults = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in signature_defaults(cls, exclude).items()
    }
    got = {k: field_default(f) for k, f in fields.items()}
    assert {k: v for k, v in got.items() if v is not MISSING} == defaults


def field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# Each option of a constructed group, composed at the published settings (no CPU budget).
BUILT_OPTIONS = [
    (group, path.stem)
    for group in ("data", "net", "matching", "risk", "clustering")
    for path in sorted((CONF_DIR / group).glob("*.yaml"))
    if path.stem != "none" or group == "risk"
]


@pytest.mark.parametrize(("group", "option"), BUILT_OPTIONS)
def test_composed_defaults_are_the_constructor_defaults(group: str, option: str) -> None:
    """What a user runs with no override is what the constructor says (MTT's lr_teacher once
    read 0.01 in the code and 0.001 in the YAML)."""
    published = [] if group == "data" else ["data=cifar10"]  # no CPU budget overlay
    cfg = compose_config(f"{group}={option}", *published)
    node = cfg[group]
    cls = target_class(node._target_)
    exclude = next(ex for (g, _), (p, ex) in GENERATED.items() if g == group and p == node._target_)
    chain = option_chain(group, option)
    for key, default in signature_defaults(cls, exclude).items():
        if key not in chain:
            default = list(default) if isinstance(default, tuple) else default
            assert OmegaConf.to_container(node, resolve=False)[key] == default, key


def option_chain(group: str, option: str) -> set[str]:
    """Keys set by the option's file and the option files it extends."""
    keys: set[str] = set()
    while not option.endswith("_schema"):
        raw = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
        keys |= set(raw) - {"defaults"}
        option = raw.defaults[0]
    return keys


def test_a_misspelt_key_of_a_generated_schema_fails_at_compose_time() -> None:
    from hydra.errors import ConfigCompositionException

    for override in ("risk=cvar", "clustering=faiss_kmeans"):
        group = override.split("=")[0]
        with pytest.raises(ConfigCompositionException):
            compose_config(override, f"{group}.nonexistent_key=1")
    with pytest.raises(ConfigCompositionException):  # typed: a string is no float
        compose_config("risk=cvar", "risk.alpha=half")


def test_a_config_typed_by_a_generated_schema_pickles() -> None:
    """DDP's spawned processes receive the config by pickle."""
    import pickle

    cfg = compose_config("matching=dsa", "risk=cvar")
    again = pickle.loads(pickle.dumps(cfg))
    assert again.matching.lr_img == cfg.matching.lr_img and again.risk.alpha == 0.5
