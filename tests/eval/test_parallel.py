"""eval.devices: evaluation networks trained in worker processes, one per device, give the
figures of the one-by-one evaluation (same seeds, so the same networks)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from rdd.config.errors import UserError
from rdd.eval.parallel import worker_devices
from rdd.eval.scoring import evaluate_synset
from rdd.nets import build_net
from rdd.outputs.files import read_metrics
from tests.conftest import TINY
from tests.eval.test_scoring import CPU, EVAL, EasyData

# Picklable (workers are spawned): a module-level partial, not a lambda.
MLP = partial(build_net, {"_target_": "rdd.nets.mlp.MLP"}, 1, 10, (8, 8))
CONV = partial(
    build_net, {"_target_": "rdd.nets.convnet.ConvNet", "depth": 2, "width": 16}, 1, 10, (8, 8)
)


def evaluation(devices: int, threads: int):
    """Two architectures x 3 networks with DSA, on `devices` workers, `threads` CPU threads
    here (the workers get threads // devices each)."""
    data = EasyData(per_class=3)
    settings = OmegaConf.merge(EVAL, {"num_nets": 3, "epochs": 6, "dsa": True, "devices": devices})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return evaluate_synset(*data.train, data, {"mlp": MLP, "conv": CONV}, settings, CPU, 0)
    finally:
        torch.set_num_threads(before)


def test_two_workers_give_the_figures_of_one_by_one_bitwise() -> None:
    # One thread per process on both sides: a CPU kernel may sum in another order on another
    # number of threads, which is not what this compares.
    alone = evaluation(devices=1, threads=1)
    spread = evaluation(devices=2, threads=2)
    assert dict(spread) == dict(alone)
    assert spread.details == alone.details
    per_net = alone.details["conv"]["class_acc"]
    assert len(per_net) == 3 and per_net[0] != per_net[1]  # three different networks


def test_the_device_count_is_checked() -> None:
    for bad in (0, -2, "two", True):
        with pytest.raises(UserError, match="eval.devices must be"):
            worker_devices(OmegaConf.create({"devices": bad}), CPU)
    assert worker_devices(OmegaConf.create({"devices": 1}), CPU) == []
    assert worker_devices(OmegaConf.create({"devices": -1}), CPU) == []  # no GPU: here
    assert worker_devices(OmegaConf.create({"devices": 3}), CPU) == [CPU] * 3


def test_stacked_and_spread_together_is_refused() -> None:
    data = EasyData(per_class=3)
    settings = OmegaConf.merge(EVAL, {"devices": 2, "batched_nets": True})
    with pytest.raises(UserError, match="choose one"):
        evaluate_synset(*data.train, data, {"mlp": MLP}, settings, CPU, 0)


@pytest.mark.slow  # two whole runs and two worker start-ups (~1 min): make test-full
def test_a_run_evaluated_on_two_cpu_processes_reports_what_one_does(tmp_path, cli) -> None:
    args = [*TINY, "eval.num_nets=2", "trainer=cpu", "trainer.enable_progress_bar=false"]
    figures = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread here and in each worker: the same float sums
    try:
        for devices in (1, 2):
            out = tmp_path / f"devices{devices}"
            run = [*args, f"eval.devices={devices}", f"hydra.run.dir={out}"]
            done = cli("rdd.run", *run, cwd=tmp_path)
            assert done.returncode == 0, done.stderr[-2000:]
            metrics = read_metrics(out)
            figures[devices] = {k: v for k, v in metrics.items() if k.endswith("_acc")}
    finally:
        torch.set_num_threads(before)
    assert figures[2] == figures[1] and figures[1]["test_acc"] > 0
