"""metrics.json: every figure once, headline_net naming the headline architecture; read back
as rdd.run returns them (also from files written before, which repeat the headline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rdd.config.errors import UserError
from rdd.outputs.files import read_metrics, stored_metrics

# As rdd.eval.scoring.summarise returns them: the first architecture's figures repeated bare.
IN_MEMORY = {
    "mlp/test_acc": 40.0,
    "mlp/test_acc_std": 1.0,
    "convnet/test_acc": 50.0,
    "convnet/test_acc_std": 2.0,
    "convnet/worst_class_acc": 10.0,
    "test_acc": 40.0,
    "test_acc_std": 1.0,
    "distill_seconds": 3.5,
    "eval_seconds": 1.5,
}


def test_the_file_holds_each_figure_once_and_names_the_headline(tmp_path) -> None:
    stored = stored_metrics(IN_MEMORY)
    assert stored == {
        "headline_net": "mlp",
        "mlp/test_acc": 40.0,
        "mlp/test_acc_std": 1.0,
        "convnet/test_acc": 50.0,
        "convnet/test_acc_std": 2.0,
        "convnet/worst_class_acc": 10.0,
        "distill_seconds": 3.5,
        "eval_seconds": 1.5,
    }
    (tmp_path / "metrics.json").write_text(json.dumps(stored))
    assert read_metrics(tmp_path) == IN_MEMORY
    assert "worst_class_acc" not in read_metrics(tmp_path)  # only the headline's are bare


def test_the_headline_is_the_architecture_whose_figures_are_repeated() -> None:
    # convnet comes first in the file but the bare figures are mlp's (e.g. older key order).
    metrics = {"convnet/test_acc": 50.0, "mlp/test_acc": 40.0, "test_acc": 40.0}
    assert stored_metrics(metrics) == {
        "headline_net": "mlp",
        "convnet/test_acc": 50.0,
        "mlp/test_acc": 40.0,
    }


def test_an_old_file_with_the_aliases_reads_unchanged(tmp_path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps(IN_MEMORY))
    assert read_metrics(tmp_path / "metrics.json") == IN_MEMORY


def test_a_broken_file_is_a_one_line_user_error(tmp_path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_metrics(tmp_path)
    with pytest.raises(UserError, match="cannot read"):
        read_metrics(tmp_path / "missing")


def test_the_summary_counts_networks_and_epochs_in_words_that_agree() -> None:
    from types import SimpleNamespace

    from rdd.outputs.summary import format_summary

    data = SimpleNamespace(im_size=(8, 8), name="digits", num_classes=10, channel=1)
    for nets, epochs, words in ((1, 1, "1 net x 1 epoch"), (5, 300, "5 nets x 300 epochs")):
        cfg = OmegaConf.create(
            {"matching": {"name": "dc"}, "risk": {"name": "none"}, "ipc": 1, "seed": 0}
            | {"eval": {"num_nets": nets, "epochs": epochs, "dsa": False}}
        )
        summary = format_summary(cfg, data, {"eval_seconds": 1.0}, Path("out"))
        assert f"({words}, DSA off)" in summary
