"""Expert buffers (`python -m rdd.buffer`): saved, found again by config, resumed, refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate

from rdd.config.errors import UserError
from rdd.experts import ExpertStore, Trajectories, buffer_key, store_for
from rdd.experts.training import ExpertTrainer, make_buffer
from rdd.outputs.files import read_metrics
from tests.conftest import MTT_EXPERTS, compose_config

SMALL = ["matching=mtt", "experts.num_experts=2", "experts.epochs=3", "trainer.accelerator=cpu"]
SMALL += ["matching.max_start_epoch=2"]  # MTT needs 2 - 1 + expert_epochs 2 = 3 epochs


def buffer_config(root, *overrides: str):
    return compose_config(*SMALL, f"experts.root={root}", *overrides, config_name="buffer")


def trajectories(store: ExpertStore) -> list[torch.Tensor]:
    traj = Trajectories(store.finished())
    return [
        torch.stack([traj.snapshot(e, t) for t in range(traj.epochs + 1)]) for e in range(len(traj))
    ]


def test_buffer_saves_every_epoch_of_every_expert_deterministically(tmp_path) -> None:
    store = make_buffer(buffer_config(tmp_path / "a"))
    experts = trajectories(store)
    assert len(experts) == 2 and all(t.shape[0] == 4 for t in experts)
    assert not torch.equal(experts[0][0], experts[0][-1])  # the expert trained
    assert not torch.equal(experts[0][0], experts[1][0])  # experts start apart
    again = trajectories(make_buffer(buffer_config(tmp_path / "b")))
    assert all(torch.equal(x, y) for x, y in zip(experts, again, strict=True))
    assert json.loads((store.directory / "key.json").read_text())["experts"]["epochs"] == 3


def test_an_interrupted_buffer_continues_where_it_stopped(tmp_path, monkeypatch) -> None:
    uninterrupted = trajectories(make_buffer(buffer_config(tmp_path / "whole")))
    real_epoch, calls = ExpertTrainer.train_epoch, []

    def dies_in_the_second_experts_second_epoch(self, *args):
        calls.append(args[-1])
        if len(calls) == 5:  # expert 0: epochs 0-2; expert 1: epoch 0, then the kill
            raise KeyboardInterrupt
        return real_epoch(self, *args)

    monkeypatch.setattr(ExpertTrainer, "train_epoch", dies_in_the_second_experts_second_epoch)
    cfg = buffer_config(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        make_buffer(cfg)
    monkeypatch.setattr(ExpertTrainer, "train_epoch", real_epoch)
    store = ExpertStore.locate(tmp_path / "killed", key_of(cfg))
    assert store.expert_path(0).exists() and store.partial_path(1).exists()
    resumed = []
    monkeypatch.setattr(
        ExpertTrainer, "train_epoch", lambda self, *a: resumed.append(a[-1]) or real_epoch(self, *a)
    )
    make_buffer(cfg)
    assert resumed == [1, 2]  # only expert 1's missing epochs were trained
    assert not store.partial_path(1).exists()
    assert all(torch.equal(x, y) for x, y in zip(uninterrupted, trajectories(store), strict=True))


def key_of(cfg):
    from rdd.nets import net_name

    data = instantiate(cfg.data)
    data.setup()
    return buffer_key(cfg, data, net_name(cfg))


def test_the_buffer_key_follows_what_changes_trajectories(tmp_path) -> None:
    base = key_of(buffer_config(tmp_path))
    assert key_of(buffer_config(tmp_path, "experts.num_experts=7")) == base  # how many: same buffer
    robust_matching_only = key_of(buffer_config(tmp_path, "risk=cvar", "robust.targets=[matching]"))
    assert robust_matching_only == base  # plain experts serve a risk on matching
    for change in (
        ["data.zca=true"],
        ["experts.lr=0.02"],
        ["net=mlp"],
        ["risk=cvar", "clustering=faiss_kmeans"],
        ["risk=cvar", "clustering=faiss_kmeans", "risk.alpha=0.5"],
    ):
        assert key_of(buffer_config(tmp_path, *change)) != base, change


def test_a_folder_with_another_key_is_not_written_into(tmp_path) -> None:
    store = ExpertStore(tmp_path / "buf", {"a": 1})
    store.claim()
    with pytest.raises(UserError, match="another config"):
        ExpertStore(tmp_path / "buf", {"a": 2}).claim()


def test_the_net_is_named_by_its_config_alone() -> None:
    """One name whether the config came from the command line or from Python: the option whose
    config it is (digits' default net is convnet_w32), else its class."""
    from rdd.nets import net_name

    assert net_name(compose_config()) == "convnet_w32"  # Python's compose once said "convnet"
    assert net_name(compose_config("net=convnet", "net.width=32")) == "convnet_w32"
    assert net_name(compose_config("data=cifar10")) == "convnet"
    assert net_name(compose_config("net=convnet", "net.width=48")) == "convnet"
    assert net_name(compose_config("net=resnet18_bn")) == "resnet18_bn"


def test_a_net_option_that_does_not_compose_names_no_net(monkeypatch) -> None:
    """A broken option on the search path costs the one-composition shortcut, not the name."""
    import rdd.nets as nets

    real = nets.compose_in_app

    def compose(config_name: str, overrides: list[str]):
        if len(overrides) > 1 or overrides == ["net=convnet_w64"]:  # all at once; the broken one
            raise HydraException("broken option")
        return real(config_name, overrides)

    monkeypatch.setattr(nets, "compose_in_app", compose)
    nets.option_configs.cache_clear()
    try:
        names = [name for name, _ in nets.option_configs(())]
        assert "convnet_w64" not in names and {"convnet", "convnet_w32", "mlp"} <= set(names)
        assert nets.net_name(compose_config()) == "convnet_w32"
    finally:
        nets.option_configs.cache_clear()


def test_a_buffer_made_on_the_command_line_is_used_by_a_config_from_python(tmp_path, cli) -> None:
    from rdd.experts.trajectories import attach_experts

    overrides = ["matching=mtt", "matching.max_start_epoch=1", *MTT_EXPERTS]
    root = f"experts.root={tmp_path / 'buffers'}"
    made = cli("rdd.buffer", *overrides, root, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    cfg = compose_config(*overrides, root)  # as a notebook composes rdd.run's config
    data = instantiate(cfg.data)
    data.setup()
    matcher = SimpleNamespace(attach=lambda trajectories: setattr(matcher, "got", trajectories))
    attach_experts(cfg, data, matcher)
    assert len(matcher.got) == 1 and matcher.got.epochs == 2


def test_a_buffer_under_the_old_net_name_is_moved_to_the_new_one(tmp_path, monkeypatch) -> None:
    """Buffers keyed by the net's old name (``convnet`` for digits' width-32 net, composed in
    Python) are found, renamed to the new key's folder, or read in place if that fails."""
    cfg = buffer_config(tmp_path)
    data = instantiate(cfg.data)
    data.setup()
    old_key = buffer_key(cfg, data, "convnet")
    old = ExpertStore.locate(tmp_path, old_key)
    old.claim()
    old.save_expert(0, torch.arange(6.0).view(3, 2), ["w"])

    def refused(*args) -> None:
        raise PermissionError("read-only")

    with monkeypatch.context() as blocked:  # a folder that cannot be renamed: used where it is
        blocked.setattr(Path, "rename", refused)
        assert store_for(cfg, data).directory == old.directory
    store = store_for(cfg, data)
    assert "-convnet_w32-" in store.directory.name and not old.directory.exists()
    assert store.holds(key_of(cfg)) and len(store.finished()) == 1
    assert torch.equal(Trajectories(store.finished()).snapshot(0, 2), torch.tensor([4.0, 5.0]))
    assert store_for(cfg, data).directory == store.directory  # moved once


def test_a_missing_buffer_names_how_the_nearest_one_differs(tmp_path) -> None:
    from rdd.experts.trajectories import nearest_hint

    ours = {"data": {"name": "digits", "zca": False}, "experts": {"epochs": 50, "lr": 0.01}}
    one_off = {"data": {"name": "digits", "zca": False}, "experts": {"epochs": 2, "lr": 0.01}}
    two_off = {"data": {"name": "digits", "zca": True}, "experts": {"epochs": 2, "lr": 0.01}}
    ExpertStore(tmp_path / "two-off", two_off).claim()
    ExpertStore(tmp_path / "one-off", one_off).claim()
    store = ExpertStore(tmp_path / "ours", ours)
    assert store.nearest_other() == (tmp_path / "one-off", ["experts.epochs"])
    assert (
        nearest_hint(store) == " (the nearest buffer there, 'one-off', differs in: experts.epochs)"
    )
    assert nearest_hint(ExpertStore(tmp_path / "empty" / "ours", ours)) == ""


def test_robust_experts_train_on_the_group_risk(tmp_path) -> None:
    robust = ["risk=cvar", "clustering=faiss_kmeans", "clustering.k=2", "experts.num_experts=1"]
    store = make_buffer(buffer_config(tmp_path, *robust))
    assert "-cvar-" in store.directory.name
    plain = make_buffer(buffer_config(tmp_path, "experts.num_experts=1"))
    robust_traj, plain_traj = trajectories(store)[0], trajectories(plain)[0]
    assert torch.equal(robust_traj[0], plain_traj[0])  # same initialisation ...
    assert not torch.allclose(robust_traj[-1], plain_traj[-1])  # ... another objective
    with pytest.raises(UserError, match="clustering=faiss_kmeans"):
        make_buffer(
            buffer_config(tmp_path, "risk=cvar", "clustering=none", "experts.num_experts=1")
        )


def test_robust_experts_on_the_known_subgroup_weigh_its_groups(tmp_path) -> None:
    one = ["experts.num_experts=1", "data.subgroup={transform:invert,fraction:0.2}"]
    config = buffer_config(tmp_path, "risk=max_group", "clustering=known", *one)
    data = instantiate(config.data)
    data.setup()
    trainer = ExpertTrainer(config, data, torch.device("cpu"))
    trainer.regroup(trainer.make_net(), 0)
    # The expert's groups are the mask: common (2c) and altered (2c + 1) images of class c.
    assert torch.equal(trainer.groups, 2 * data.train_y + data.train_subgroup.long())
    robust = trajectories(make_buffer(config))[0]
    plain = trajectories(make_buffer(buffer_config(tmp_path, *one)))[0]
    assert torch.equal(robust[0], plain[0]) and not torch.allclose(robust[-1], plain[-1])
    with pytest.raises(UserError, match="data.subgroup"):
        make_buffer(buffer_config(tmp_path, "risk=cvar", "clustering=known", one[0]))


def test_the_buffer_refuses_before_training_what_mtt_would_refuse(tmp_path, monkeypatch) -> None:
    """rdd.buffer and rdd.run matching=mtt share one check (TrajectoryMatching's)."""

    def no_training(*args, **kwargs):
        raise AssertionError("an expert trained before the settings were checked")

    monkeypatch.setattr(ExpertTrainer, "train", no_training)
    default_start = buffer_config(tmp_path, "matching.max_start_epoch=20")  # needs 21 epochs
    with pytest.raises(UserError, match=r"experts.epochs=3 is too short .* set experts.epochs=21"):
        make_buffer(default_start)
    with pytest.raises(UserError, match="need experts of 6 epochs"):
        make_buffer(buffer_config(tmp_path, "matching.expert_epochs=5"))
    with pytest.raises(UserError, match="lr_teacher must be positive"):  # the matcher's own
        make_buffer(buffer_config(tmp_path, "matching.lr_teacher=0"))
    with pytest.raises(UserError, match="add matching=mtt"):
        make_buffer(compose_config("matching=dc", f"experts.root={tmp_path}", config_name="buffer"))
    assert not (tmp_path / "buffers").exists() and not list(tmp_path.iterdir())
    # What the buffer accepts, MTT accepts too: exactly long enough.
    matcher = instantiate(buffer_config(tmp_path).matching)
    matcher.check_expert_epochs(3, made=True)
    with pytest.raises(UserError, match="re-make the buffer with experts.epochs=3"):
        matcher.check_expert_epochs(2, made=True)


def test_a_corrupt_expert_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "expert_00000.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="run python -m rdd.buffer again"):
        Trajectories([path])


TINY_MTT = ["matching=mtt", "data.zca=true", "ipc=2", "experts.num_experts=2", "experts.epochs=3"]
TINY_MTT += ["matching.iterations=2", "matching.syn_steps=3", "matching.max_start_epoch=1"]
TINY_MTT += ["eval.epochs=2", "eval.num_nets=1", "logger=none", "trainer.enable_progress_bar=false"]


def test_command_line_says_how_to_make_the_missing_buffer_then_uses_it(tmp_path, cli) -> None:
    root = f"experts.root={tmp_path / 'buffers'}"
    missing = cli("rdd.run", *TINY_MTT, root, cwd=tmp_path)
    assert missing.returncode == 2
    error = missing.stderr.strip().splitlines()[-1]
    assert error.startswith("error: no expert trajectories") and "python -m rdd.buffer" in error
    assert "matching.syn_steps=3" in error  # the user's own overrides, ready to paste

    made = cli("rdd.buffer", *TINY_MTT, root, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "run"
    done = cli("rdd.run", *TINY_MTT, root, f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    from rdd.synset import SyntheticSet

    synset = SyntheticSet.load(out)
    assert synset.meta["method"] == "mtt" and synset.meta["lr"] > 0
    assert synset.zca is not None and synset.meta["zca"]  # the evaluator whitens its test data
    assert any("-zca-" in p.name for p in (tmp_path / "buffers").iterdir())
    assert read_metrics(out)["test_acc"] > 0


def test_the_buffer_run_log_says_what_was_made_and_where(tmp_path, cli) -> None:
    """buffer.log in the run directory is not empty: it names the experts and their folder,
    counted in words that agree with the numbers ("1 expert", not "1 experts")."""
    root, out = tmp_path / "buffers", tmp_path / "run"
    made = cli(
        "rdd.buffer",
        "matching=mtt",
        "matching.max_start_epoch=1",
        *MTT_EXPERTS,
        f"experts.root={root}",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    (store,) = root.iterdir()
    lines = (out / "buffer.log").read_text().splitlines()
    assert any(line.endswith(f"1 expert x 2 epochs in {store}") for line in lines), lines
    assert any(f"1 expert x 2 epochs (0 already made) -> {store}" in line for line in lines)
