"""Every option of every config group composes, and instantiates where it builds something."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rdd.config.cli import CHECKED_GROUPS
from rdd.config.cli import group_options as options
from rdd.config.compose import CONF_DIR
from rdd.nets import build_net
from tests.conftest import compose_config

GROUPS = CHECKED_GROUPS  # every group whose options are files in conf/<group>/


def test_every_required_group_exists() -> None:
    for group in (*GROUPS, "paths", "hydra"):
        assert (CONF_DIR / group).is_dir(), group
    assert "none" in options("clustering") and "none" in options("risk")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_option_composes(group: str, option: str, tmp_path) -> None:
    cfg = compose_config(f"{group}={option}", output_dir=tmp_path)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.ipc > 0


@pytest.mark.parametrize("option", options("matching"))
def test_matching_instantiates(option: str, tmp_path) -> None:
    cfg = compose_config(f"matching={option}", output_dir=tmp_path)
    matcher = instantiate(cfg.matching)
    assert matcher.name == option
    assert matcher.is_coreset == (option in ("random", "herding", "kcenter", "full"))


@pytest.mark.parametrize("option", options("risk"))
def test_risk_instantiates(option: str, tmp_path) -> None:
    import math

    import torch

    from rdd.robust.plan import build_risk

    risk = build_risk(compose_config(f"risk={option}", output_dir=tmp_path).risk)
    # Two groups: means 2 (1 sample) and 4/3 (3 samples: 1, 1, 2); values by hand.
    sums, counts = torch.tensor([2.0, 4.0]), torch.tensor([1.0, 3.0])
    losses, groups = torch.tensor([2.0, 1.0, 1.0, 2.0]), torch.tensor([0, 1, 1, 1])
    expected = {
        "none": 1.5,  # the mean over samples
        # The worst half of the mass: all of group 0 (mass 1/4) and 1/4 of group 1.
        "cvar": (0.25 * 2 + 0.25 * 4 / 3) / 0.5,
        "max_group": 2.0,
        "two_level": 2.0,  # inner CVaRs 2 and 2: (mean 2 + 1.0 * max 2) / (1 + 1.0)
        # relative to the mean loss s = 1.5: s log E exp(Z / s)
        "entropic": 1.5 * math.log(0.25 * math.e ** (2 / 1.5) + 0.75 * math.e ** (4 / 3 / 1.5)),
    }
    assert float(risk(sums, counts, losses, groups)) == pytest.approx(expected[option], rel=1e-5)


@pytest.mark.parametrize("option", options("data"))
def test_data_instantiates(option: str, tmp_path) -> None:
    overrides = [f"data={option}"] + (["data.root=somewhere"] if option == "image_folder" else [])
    cfg = compose_config(*overrides, output_dir=tmp_path)
    data = instantiate(cfg.data)
    assert data.dsa_strategy


@pytest.mark.parametrize("option", options("logger"))
def test_logger_instantiates(option: str, tmp_path) -> None:
    overrides = [f"logger={option}"] + (["logger.wandb.offline=true"] if option == "wandb" else [])
    cfg = compose_config(*overrides, output_dir=tmp_path)
    loggers = [instantiate(node) for node in (cfg.logger or {}).values()]
    assert len(loggers) == (0 if option == "none" else 1)


def test_net_options_build_for_the_default_data(tmp_path) -> None:
    cfg = compose_config(output_dir=tmp_path)
    net = build_net(cfg.net, 1, 10, (16, 16))
    assert sum(p.numel() for p in net.parameters()) > 0


def test_digits_defaults_to_a_small_convnet_but_the_command_line_wins(tmp_path) -> None:
    assert compose_config(output_dir=tmp_path).net.width == 32
    assert compose_config("net=convnet", output_dir=tmp_path).net.width == 128
    cifar = compose_config("data=cifar10", output_dir=tmp_path)
    assert cifar.net.width == 128 and cifar.matching.iterations == 1000  # published defaults


def test_a_misspelt_matching_key_fails_at_compose_time(tmp_path) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_config("matching.lr_imgg=1", output_dir=tmp_path)


def test_dsa_inherits_dc_and_turns_augmentation_on(tmp_path) -> None:
    dc = compose_config("matching=dc", output_dir=tmp_path).matching
    dsa = compose_config("matching=dsa", output_dir=tmp_path).matching
    assert not dc.dsa and dsa.dsa
    assert dsa.lr_img == dc.lr_img and dsa.name == "dsa"


# The published IDM commands (uitrbn/IDM command.txt): (data, ipc) -> settings that differ.
IDM_PUBLISHED = {
    "idm_cifar10_ipc1": ("cifar10", 1, {"ce_weight": 0.5, "batch_real": 5000, "generate_every": 5}),
    "idm_cifar10_ipc10": ("cifar10", 10, {"ce_weight": 0.5, "batch_real": 256, "train_steps": 10}),
    "idm_cifar10_ipc50": ("cifar10", 50, {"ce_weight": 0.1, "generate_every": 30}),
    "idm_cifar100_ipc1": (
        "cifar100",
        1,
        {"ce_weight": 0.5, "batch_real": 5000, "generate_every": 5},
    ),
    "idm_cifar100_ipc10": ("cifar100", 10, {"ce_weight": 0.1, "train_steps": 50}),
    "idm_cifar100_ipc50": ("cifar100", 50, {"ce_weight": 0.1, "train_steps": 10}),
}


@pytest.mark.parametrize("name", sorted(IDM_PUBLISHED))
def test_idm_overlays_carry_the_published_settings(name: str) -> None:
    data, ipc, settings = IDM_PUBLISHED[name]
    cfg = compose_config(f"experiment={name}")
    assert (cfg.data.name, cfg.ipc, cfg.matching.name) == (data, ipc, "idm")
    shared = {"lr_img": 0.2, "factor": 2, "queue_size": 100, "sampled_nets": 1, "fetch_nets": 2}
    shared |= {"iterations": 20000, "momentum_net": 0.9, "weight_decay_net": 0.0005}
    for key, value in (shared | settings).items():
        assert cfg.matching[key] == value, key
    assert cfg.net._target_.endswith("ConvNet") and cfg.net.width == 128


@pytest.mark.parametrize("data", ["cifar10", "cifar100"])
def test_dm_overlays_carry_the_published_settings(data: str) -> None:
    cfg = compose_config(f"experiment=dm_{data}")
    m = cfg.matching
    assert (cfg.data.name, m.name, m.lr_img, m.batch_real, m.iterations) == (
        data,
        "dm",
        1.0,
        256,
        20000,
    )
    assert m.dsa and m.factor == 1 and m.queue_size == 0 and m.ce_weight == 0


# The author's MTT commands (mtt-distillation): (data, ipc) -> (N, M, T+, lr_img, lr_lr,
# lr_teacher, ZCA, batch_syn).
MTT_PUBLISHED = {
    ("cifar10", 1): (50, 2, 2, 100, 1e-7, 0.01, True, None),
    ("cifar10", 10): (30, 2, 20, 100, 1e-5, 0.001, True, None),
    ("cifar10", 50): (30, 2, 40, 1000, 1e-5, 0.001, False, None),
    ("cifar100", 1): (20, 3, 20, 1000, 1e-5, 0.01, True, None),
    ("cifar100", 10): (20, 2, 20, 1000, 1e-5, 0.01, False, None),
    ("cifar100", 50): (80, 2, 40, 1000, 1e-5, 0.01, True, 125),
}


@pytest.mark.parametrize("data, ipc", sorted(MTT_PUBLISHED))
def test_mtt_overlays_carry_the_published_settings(data: str, ipc: int) -> None:
    cfg = compose_config(f"experiment=mtt_{data}_ipc{ipc}")
    m = cfg.matching
    got = (m.syn_steps, m.expert_epochs, m.max_start_epoch, m.lr_img, m.lr_lr, m.lr_teacher)
    want = MTT_PUBLISHED[(data, ipc)]
    assert got == pytest.approx(want[:6]) and (cfg.data.zca, m.batch_syn) == want[6:]
    assert (cfg.data.name, cfg.ipc, m.name, m.iterations) == (data, ipc, "mtt", 5000)
    assert (cfg.experts.num_experts, cfg.experts.epochs, cfg.experts.lr) == (100, 50, 0.01)
    assert cfg.net.width == 128 and cfg.eval.epochs == 1000


def test_the_cross_architecture_pool_builds_every_net_and_keeps_the_protocol(tmp_path) -> None:
    from hydra.utils import instantiate as make

    from rdd.eval.settings import eval_nets

    cfg = compose_config("eval=cross_arch", output_dir=tmp_path)
    default = compose_config(output_dir=tmp_path)
    assert list(cfg.eval.nets) == ["convnet", "resnet18", "vgg11", "alexnet"]
    assert cfg.eval.epochs == default.eval.epochs and cfg.eval.shifts == default.eval.shifts
    data = make(cfg.data)
    data.setup()
    for name, factory in eval_nets(cfg, data).items():
        out = factory()(data.train_x[:2])
        assert out.shape == (2, data.num_classes), name


def test_the_readme_gives_an_overlays_example_command_in_full() -> None:
    """An overlay whose YAML shows the command to run it (``# python -m rdd.run experiment=X
    ...``) is named in README.md with that whole command, never with its overrides elided."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        shown = re.search(r"^# python -m rdd\.run (experiment=\S+.*)$", path.read_text(), re.M)
        if shown is None:
            continue
        command = shown.group(1).strip()
        name = command.split()[0]
        # Each mention: from the overlay's name to the end of its `code` or its command line.
        mentions = re.findall(rf"{re.escape(name)}(?![\w])[^`#\n]*", readme)
        assert mentions, f"README.md does not show {command}"
        for mention in mentions:
            assert " ".join(mention.split()) == command, (path.name, mention)
