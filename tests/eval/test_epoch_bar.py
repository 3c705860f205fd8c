"""An evaluation network that trains long shows its epochs (and the time per epoch) under the
bar over networks, which would otherwise sit at "0/1 net" for the whole-dataset reference."""

from __future__ import annotations

import pytest

import rdd.outputs.progress
from rdd.eval.stacked import train_stacked
from rdd.eval.training import train_eval_net
from rdd.outputs.progress import EpochBar
from tests.eval.test_scoring import CPU
from tests.eval.test_stacked import PROTOCOL, SEEDS, convnet, train_set


def test_the_bar_counts_epochs_in_steps_with_the_time_per_epoch() -> None:
    """Two steps an epoch: three steps are one and a half epochs; a long epoch moves too."""
    bar = EpochBar(epochs=6, steps_per_epoch=2)
    for _ in range(3):
        bar.step()
    shown = str(bar.bar)
    bar.close()
    assert shown.startswith("network:  25%|") and "| epoch 1.5/6 [" in shown, shown
    assert shown.endswith("s/epoch]"), shown


@pytest.fixture
def shown_at_once(monkeypatch):
    """Bars shown from the first step (in a run: once a network has trained a few seconds)."""
    monkeypatch.setattr(rdd.outputs.progress, "INNER_BAR_DELAY_S", 0)


def test_a_network_trained_alone_shows_its_epochs(shown_at_once, capsys) -> None:
    x, y = train_set()
    train_eval_net(convnet(), x, y, 10, PROTOCOL, CPU, seed=1)
    err = capsys.readouterr().err
    assert "network:" in err and "/6 [" in err and "s/epoch]" in err, err
    train_eval_net(convnet(), x, y, 10, PROTOCOL, CPU, seed=1, show_epochs=False)  # a worker
    assert "network:" not in capsys.readouterr().err


def test_stacked_networks_show_their_epochs(shown_at_once, capsys) -> None:
    x, y = train_set()
    train_stacked(convnet(), x, y, PROTOCOL, SEEDS)
    err = capsys.readouterr().err
    assert "network:" in err and "/6 [" in err and "s/epoch]" in err, err
