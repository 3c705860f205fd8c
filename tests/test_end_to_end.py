"""Slow end-to-end checks (`make test-full`): the embedded default's quality, real CIFAR-10."""

from __future__ import annotations

import pytest

from rdd.run import run
from tests.conftest import SHARED_CIFAR, compose_config

pytestmark = pytest.mark.slow


def test_default_dc_beats_random_on_digits_at_ipc_10(tmp_path) -> None:
    """What `make run` does, against a random real subset under the same evaluation and seed."""
    dc = run(compose_config("logger=none", output_dir=tmp_path / "dc"))
    rnd = run(compose_config("logger=none", "matching=random", output_dir=tmp_path / "random"))
    assert dc["test_acc"] > rnd["test_acc"]


@pytest.mark.parametrize("method", ["dm", "idm"])
def test_distribution_matching_beats_random_on_digits_at_ipc_10(method, tmp_path) -> None:
    """The digits budget (budget_matching/digits_<method>.yaml) and the same evaluation."""
    distilled = run(compose_config("logger=none", f"matching={method}", output_dir=tmp_path / "d"))
    rnd = run(compose_config("logger=none", "matching=random", output_dir=tmp_path / "random"))
    assert distilled["test_acc"] > rnd["test_acc"]


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="needs ../shared/data/cifar10-jpeg")
@pytest.mark.parametrize("method", ["dsa", "dm", "idm"])
def test_matching_on_real_cifar10_end_to_end(method, tmp_path) -> None:
    cfg = compose_config(
        "data=cifar10",
        f"data.root={SHARED_CIFAR}",
        f"matching={method}",
        "ipc=1",
        "matching.iterations=2",
        "eval.epochs=10",
        "eval.num_nets=1",
        "logger=none",
        output_dir=tmp_path,
    )
    metrics = run(cfg)
    assert metrics["test_acc"] > 12  # ten classes: above chance after a short budget


def test_mtt_on_digits_at_ipc_10_is_at_least_as_good_as_random(tmp_path) -> None:
    """The digits budget (budget_matching/digits_mtt.yaml: its buffer and distillation).

    A random real subset already reaches ~95.6 % on digits at IPC 10; measured (2026-11-21)
    MTT tied it on test accuracy (95.64 both) and beat it on validation (96.74 against 93.24)
    and on blurred test images; the clear MTT win is on CIFAR-10 (benchmarks/README.md).
    """
    from rdd.experts.training import make_buffer

    root = f"experts.root={tmp_path / 'buffers'}"
    make_buffer(compose_config("matching=mtt", root, config_name="buffer"))
    mtt = run(compose_config("logger=none", "matching=mtt", root, output_dir=tmp_path / "mtt"))
    rnd = run(compose_config("logger=none", "matching=random", output_dir=tmp_path / "random"))
    assert mtt["test_acc"] >= rnd["test_acc"] and mtt["val_acc"] > rnd["val_acc"]


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="needs ../shared/data/cifar10-jpeg")
def test_mtt_with_zca_on_real_cifar10_end_to_end(tmp_path) -> None:
    """A one-expert, two-epoch buffer on whitened CIFAR-10, then two MTT iterations."""
    from rdd.experts.training import make_buffer

    overrides = ["data=cifar10", f"data.root={SHARED_CIFAR}", "data.zca=true", "net=convnet_w32"]
    overrides += ["matching=mtt", "experts.num_experts=1", "experts.epochs=2", "ipc=1"]
    overrides += ["matching.max_start_epoch=1", "matching.syn_steps=5", "matching.iterations=2"]
    overrides += [f"experts.root={tmp_path / 'buffers'}", "eval.epochs=100", "eval.num_nets=2"]
    overrides += ["eval.corruptions=[]"]  # 45 corrupted CIFAR test sets would dominate the test
    make_buffer(compose_config(*overrides, config_name="buffer"))
    metrics = run(compose_config(*overrides, "logger=none", output_dir=tmp_path / "run"))
    # 10 evaluation epochs (10 SGD steps on 10 images) left it at chance (8.87 %, measured).
    assert metrics["test_acc"] > 12  # ten classes: above chance
