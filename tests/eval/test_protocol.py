"""rdd.evaluate's protocol: the set's stored one, with only the explicit eval keys on top."""

from __future__ import annotations

from omegaconf import OmegaConf

from rdd.eval.protocol import explicit_eval, stored_protocol
from tests.conftest import compose_config


def composed_eval(*overrides: str):
    return compose_config("synset=x", *overrides, config_name="evaluate").eval


def test_only_the_keys_given_change_the_stored_protocol() -> None:
    overrides = ["eval.num_nets=2", "eval.partition.k=4", "seed=3"]
    composed = composed_eval(*overrides)
    explicit = explicit_eval(composed, overrides)
    assert explicit == {"num_nets": 2, "partition.k": 4}
    stored = OmegaConf.create({"epochs": 300, "num_nets": 5, "dsa": False, "gone_key": 1})
    stored.partition = {"k": 10, "seed": 7}
    protocol = stored_protocol(composed, stored, explicit)
    assert (protocol.epochs, protocol.num_nets, protocol.dsa) == (300, 2, False)
    assert (protocol.partition.k, protocol.partition.seed) == (4, 7)
    assert "gone_key" not in protocol  # a key the current protocol no longer has
    assert protocol.lr == composed.lr  # a key the stored protocol lacks: the current default


def test_a_group_choice_applies_what_it_changes_from_the_default() -> None:
    overrides = ["eval=cross_arch", "eval.epochs=2"]
    composed = composed_eval(*overrides)
    explicit = explicit_eval(composed, overrides)
    assert explicit == {"epochs": 2, "nets": ["convnet", "resnet18", "vgg11", "alexnet"]}
    protocol = stored_protocol(composed, OmegaConf.create({"epochs": 300, "lr": 0.05}), explicit)
    assert protocol.lr == 0.05 and protocol.epochs == 2 and len(protocol.nets) == 4


def test_without_overrides_the_stored_protocol_is_used_as_is() -> None:
    composed = composed_eval()
    stored = OmegaConf.merge(composed, {"epochs": 7, "shifts": []})
    assert stored_protocol(composed, stored, explicit_eval(composed, [])) == stored
