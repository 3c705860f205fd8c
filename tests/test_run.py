"""run(cfg) end to end on digits with a tiny budget, outputs and reproducibility."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from rdd.config.errors import UserError
from rdd.outputs.files import read_metrics
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
    saved = read_metrics(tmp_path)
    assert saved == pytest.approx(metrics)
    stored = json.loads((tmp_path / "metrics.json").read_text())  # each figure once
    net = stored["headline_net"]  # the run's own net (eval.nets: null)
    assert net == SyntheticSet.load(tmp_path).meta["net"] and "test_acc" not in stored
    assert {f"{net}/test_acc", "distill_seconds", "eval_seconds"} <= stored.keys()
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


def test_csv_logger_writes_one_named_row_per_iteration(tmp_path) -> None:
    run(
        compose_config(
            *TINY, "matching=dc", "matching.iterations=2", "logger=csv", output_dir=tmp_path
        )
    )
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        header, rows = reader.fieldnames, list(reader)
    assert header[:3] == ["iteration", "seconds", "train/match_loss"]
    assert "epoch" not in header and not any(key.startswith("eval/") for key in header)
    assert [row["iteration"] for row in rows] == ["0", "1"]
    assert all(float(row["train/match_loss"]) > 0 for row in rows)


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


# -- shifted test sets, subgroup details, the whole-dataset reference -------------------------


def test_run_scores_shifted_test_sets_and_writes_per_network_details(tmp_path) -> None:
    cfg = compose_config(
        *TINY,
        "matching=random",
        "eval.num_nets=2",
        "eval.corruptions=[contrast,impulse_noise]",
        "eval.severities=[1,5]",
        output_dir=tmp_path,
    )
    metrics = run(cfg)
    corrupted = [f"corruption_{c}_s{s}_acc" for c in ("contrast", "impulse_noise") for s in (1, 5)]
    for key in ["noise_acc", "blur_acc", "invert_acc", "corruption_acc", *corrupted]:
        assert 0 <= metrics[key] <= 100 and metrics[f"{key}_std"] >= 0, key
    # corruption_acc is the per-network mean over the corrupted sets, then averaged over nets.
    assert metrics["corruption_acc"] == pytest.approx(
        sum(metrics[k] for k in corrupted) / len(corrupted)
    )
    details = json.loads((tmp_path / "eval_details.json").read_text())
    (per_net,) = details["archs"].values()
    assert len(per_net["cluster_acc"]) == len(per_net["class_acc"]) == 2
    assert len(per_net["class_acc"][0]) == 10 and len(details["class_names"]) == 10
    worst_per_net = [min(clusters) for clusters in per_net["cluster_acc"]]
    assert metrics["worst_cluster_acc"] == pytest.approx(sum(worst_per_net) / 2, abs=1e-4)
    assert details["corruptions"] == {"contrast": [1, 5], "impulse_noise": [1, 5]}


def test_the_same_shift_seed_gives_the_same_shifted_accuracy(tmp_path) -> None:
    figures = []
    for name in ("a", "b"):
        cfg = compose_config(
            *TINY,
            "matching=random",
            "eval.corruptions=[shot_noise]",
            "eval.severities=[3]",
            output_dir=tmp_path / name,
        )
        figures.append({k: v for k, v in run(cfg).items() if not k.endswith("seconds")})
    assert figures[0] == figures[1]


def test_bad_shift_settings_fail_before_distilling(tmp_path) -> None:
    for n, (override, message) in enumerate(
        (
            ("eval.shifts=[fog]", "unknown eval.shifts entry 'fog'"),
            ("eval.corruptions=[snow]", "unknown eval.corruptions entry 'snow'"),
            ("eval.severities=[0,6]", "eval.severities must lie in 1-5"),
        )
    ):
        with pytest.raises(UserError, match=message):
            run(compose_config(*TINY, override, output_dir=tmp_path / str(n)))
        assert not (tmp_path / str(n) / "synset.pt").exists()


def test_the_test_partition_is_the_same_for_every_method_and_whitening(tmp_path) -> None:
    from hydra.utils import instantiate

    from rdd.eval.settings import eval_settings, partition_of

    partitions = []
    for overrides in (["matching=dc"], ["matching=random", "seed=3"], ["data.zca=true"]):
        cfg = compose_config(*TINY, *overrides, output_dir=tmp_path)
        data = instantiate(cfg.data)
        data.setup()
        partitions.append(partition_of(data, eval_settings(cfg, data)))
    assert all(torch.equal(partitions[0], p) for p in partitions[1:])
    cfg = compose_config(*TINY, "eval.partition.features=net", output_dir=tmp_path)
    data = instantiate(cfg.data)
    data.setup()
    by_net = partition_of(data, eval_settings(cfg, data))
    assert by_net.shape == partitions[0].shape and not torch.equal(by_net, partitions[0])


def test_the_whole_dataset_reference_trains_on_every_real_image(tmp_path) -> None:
    budget = ["ipc=2", "eval.epochs=10", "eval.num_nets=1", "logger=none", "eval.corruptions=[]"]
    full = run(compose_config(*budget, "matching=full", output_dir=tmp_path / "full"))
    subset = run(compose_config(*budget, "matching=random", output_dir=tmp_path / "random"))
    assert not (tmp_path / "full" / "synset.pt").exists()  # the dataset is not copied
    assert (tmp_path / "full" / "synset.png").is_file()
    # 10 epochs on ~1,400 digits against 10 epochs on 20 of them.
    assert full["test_acc"] > 80 and full["test_acc"] > subset["test_acc"] + 10


def test_no_validation_split_trains_on_every_image_and_reports_no_val_acc(tmp_path) -> None:
    """data.val_fraction=0, as the published-setting overlays set it: the whole training split
    is distilled from and trained on, and no validation figure is made up."""
    from hydra.utils import instantiate

    data = instantiate(compose_config("data.val_fraction=0").data)
    data.setup()
    held = instantiate(compose_config().data)
    held.setup()
    assert len(data.val_y) == 0 and len(data.train_y) == len(held.train_y) + len(held.val_y)
    metrics = run(
        compose_config(*TINY, "matching=random", "data.val_fraction=0", output_dir=tmp_path)
    )
    assert "val_acc" not in metrics and "convnet_w32/val_acc" not in metrics
    assert 0 <= metrics["test_acc"] <= 100
    for name in ("dsa_cifar10", "dm_cifar10", "idm_cifar10_ipc10", "mtt_cifar10_ipc10"):
        assert compose_config(f"experiment={name}").data.val_fraction == 0.0


def test_a_command_line_run_checks_its_config_once(tmp_path, cli, monkeypatch) -> None:
    import rdd.run

    calls = []
    check = rdd.run.check_config
    monkeypatch.setattr(rdd.run, "check_config", lambda cfg: calls.append(cfg) or check(cfg))
    done = cli(
        "rdd.run", *TINY, "print_config=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1 and (tmp_path / "run" / "metrics.json").is_file()
