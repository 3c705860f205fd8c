"""run(cfg) end to end on digits with a tiny budget, outputs and reproducibility."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from rdd.errors import UserError
from rdd.run import run
from rdd.synset import SyntheticSet
from tests.conftest import TINY, compose_config


@pytest.mark.parametrize("matching", ["dc", "dsa", "random", "herding", "kcenter"])
def test_run_writes_every_output(matching: str, tmp_path) -> None:
    overrides = (
        [*TINY, f"matching={matching}", "matching.feature_train_steps=5"]
        if matching in ("herding", "kcenter")
        else [*TINY, f"matching={matching}"]
    )
    cfg = compose_config(*overrides, output_dir=tmp_path)
    metrics = run(cfg)
    for name in ("synset.pt", "synset.png", "config.yaml", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_acc"] == pytest.approx(metrics["test_acc"])
    assert 0 <= saved["test_acc"] <= 100 and saved["test_acc_std"] >= 0
    assert saved["worst_cluster_acc"] <= saved["mean_cluster_acc"] <= 100
    synset = SyntheticSet.load(tmp_path)
    assert synset.images.shape == (20, 1, 16, 16) and synset.meta["method"] == matching
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["matching"]["name"] == matching


def test_same_seed_gives_the_identical_synthetic_set(tmp_path) -> None:
    sets = []
    for name in ("a", "b"):
        run(compose_config(*TINY, "matching=dsa", output_dir=tmp_path / name))
        sets.append(SyntheticSet.load(tmp_path / name).images)
    assert torch.equal(sets[0], sets[1])
    run(compose_config(*TINY, "matching=dsa", "seed=1", output_dir=tmp_path / "c"))
    assert not torch.equal(sets[0], SyntheticSet.load(tmp_path / "c").images)


def test_distillation_moves_the_images_away_from_their_real_init(tmp_path) -> None:
    run(compose_config(*TINY, "matching=dc", output_dir=tmp_path / "dc"))
    run(compose_config(*TINY, "matching=random", output_dir=tmp_path / "random"))
    dc, rnd = SyntheticSet.load(tmp_path / "dc"), SyntheticSet.load(tmp_path / "random")
    assert not torch.equal(dc.images, rnd.images)


def test_any_ipc_works(tmp_path) -> None:
    cfg = compose_config(
        *TINY, "ipc=3", "matching=dc", output_dir=tmp_path
    )  # not in the published table
    run(cfg)
    assert SyntheticSet.load(tmp_path).images.shape[0] == 30


def test_a_finished_run_directory_is_never_overwritten(tmp_path) -> None:
    run(compose_config(*TINY, "matching=random", output_dir=tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="already holds a run"):
        run(compose_config(*TINY, "matching=random", "seed=5", output_dir=tmp_path))
    assert before == {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}


def test_ipc_must_be_positive(tmp_path) -> None:
    with pytest.raises(UserError, match="ipc must be a positive integer"):
        run(compose_config(*TINY, "ipc=0", output_dir=tmp_path))


def test_ipc_larger_than_a_class(tmp_path) -> None:
    with pytest.raises(UserError, match="fewer than ipc"):
        run(compose_config(*TINY, "ipc=500", output_dir=tmp_path))


def test_wandb_offline_logs_without_a_network_or_account(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_config(
        *TINY, "matching=random", "logger=wandb", "logger.wandb.offline=true", output_dir=tmp_path
    )
    run(cfg)
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb"))  # the run's log, ready for `wandb sync`


def test_csv_logger_records_the_matching_loss_per_iteration(tmp_path) -> None:
    run(
        compose_config(
            *TINY, "matching=dc", "matching.iterations=2", "logger=csv", output_dir=tmp_path
        )
    )
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("train/match_loss")
    losses = [line.split(",")[column] for line in lines[1:] if line.split(",")[column]]
    assert len(losses) == 2 and all(float(v) > 0 for v in losses)


def test_evaluation_on_several_architectures(tmp_path) -> None:
    cfg = compose_config(
        *TINY, "matching=random", "eval.nets=[convnet_w32,mlp]", output_dir=tmp_path
    )
    metrics = run(cfg)
    assert {"convnet_w32/test_acc", "mlp/test_acc", "mlp/test_acc_std"} <= metrics.keys()
    assert metrics["test_acc"] == metrics["convnet_w32/test_acc"]  # the first one is the headline


def test_an_unknown_evaluation_architecture_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="unknown net 'transformer'"):
        run(
            compose_config(*TINY, "matching=random", "eval.nets=[transformer]", output_dir=tmp_path)
        )
