"""The known rare subgroup benchmark (data.subgroup): which images are altered, how, and the
group metrics it adds to a run, its summary and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage

from rdd.config.errors import UserError
from rdd.data import RealDataModule
from rdd.data.subgroup import TRANSFORMS, Subgroup, alter_subgroup, pick_members
from rdd.eval.scoring import evaluate_synset
from rdd.outputs.files import read_metrics
from rdd.report import aggregate, find_runs, markdown_table
from rdd.run import run
from tests.conftest import TINY, compose_config
from tests.data.test_data import make_tree
from tests.eval.test_scoring import CPU, EasyData, frozen_eval, initial_predictions, mlp_factory
from tests.report.test_report import tables


def random_images(n: int, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)


# -- which images ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "want"), [(0.1, [2, 1, 1, 4]), (0.5, [10, 4, 1, 20])])
def test_exactly_the_fraction_of_every_class_is_picked(fraction, want) -> None:
    labels = torch.tensor([0] * 20 + [1] * 7 + [2] * 1 + [3] * 40)[torch.randperm(68)]
    members = pick_members(labels, fraction, seed=0)
    # round(f * n_c), at least one: 0.1 * 7 -> 1, 0.5 * 7 = 3.5 -> 4, a singleton class -> 1
    assert torch.bincount(labels[members], minlength=4).tolist() == want


def test_the_seed_alone_chooses_the_images() -> None:
    labels = torch.arange(10).repeat_interleave(50)
    torch.manual_seed(123)  # the global RNG plays no part
    first = pick_members(labels, 0.1, seed=4)
    torch.manual_seed(321)
    assert torch.equal(first, pick_members(labels, 0.1, seed=4))
    assert not torch.equal(first, pick_members(labels, 0.1, seed=5))


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_only_the_chosen_images_are_altered(transform) -> None:
    images, labels = random_images(40), torch.arange(4).repeat(10)
    before = images.clone()
    altered, members = alter_subgroup(images, labels, 0.2, transform, seed=1)
    assert torch.equal(images, before)  # the input is left alone
    assert altered.dtype == torch.uint8 and int(members.sum()) == 8
    assert torch.equal(altered[~members], images[~members])
    assert torch.equal(altered[members], TRANSFORMS[transform](images[members]))
    assert (altered[members] != images[members]).any(dim=(1, 2, 3)).all()


# -- how: each transform against an independent oracle ---------------------------------------


def test_grayscale_is_the_itu_601_luma_on_every_channel() -> None:
    x = random_images(16)
    a = x.numpy().astype(np.int64)
    luma = np.floor((0.299 * a[:, 0] + 0.587 * a[:, 1] + 0.114 * a[:, 2]) + 0.5 + 1e-9)
    got = TRANSFORMS["grayscale"](x).numpy()
    assert (got == luma[:, None].astype(np.uint8)).all()
    # PIL's fixed-point L conversion agrees to one grey level
    pil = np.stack(
        [
            np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L"))
            for img in a.astype(np.uint8)
        ]
    )
    assert np.abs(got[:, 0].astype(int) - pil.astype(int)).max() <= 1


def test_invert_is_255_minus_x() -> None:
    x = random_images(4, channels=1)
    assert (TRANSFORMS["invert"](x).numpy() == 255 - x.numpy()).all()


@pytest.mark.parametrize(("size", "sigma"), [(8, 3.0), (32, 3.0), (64, 6.0)])
def test_blur_is_a_strong_gaussian_scaled_with_the_image(size, sigma) -> None:
    x = random_images(3, size=size)
    want = ndimage.gaussian_filter(
        x.numpy() / 255.0, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0
    )
    got = TRANSFORMS["blur"](x).numpy().astype(float)
    assert np.abs(got - np.round(want * 255)).max() <= 1  # float32 vs float64 rounding


def test_grayscale_refuses_one_channel_images() -> None:
    with pytest.raises(UserError, match="choose data.subgroup=invert or data.subgroup=blur"):
        TRANSFORMS["grayscale"](random_images(2, channels=1))
    with pytest.raises(UserError, match="'digits' has 1 channel"):
        RealDataModule(name="digits", mean=[0.3], std=[0.4], subgroup="grayscale").setup()


# -- the data.subgroup setting ----------------------------------------------------------------


def test_the_setting_is_a_name_or_a_mapping() -> None:
    assert Subgroup.from_config(None) is None
    assert Subgroup.from_config("blur") == Subgroup("blur", 0.05, 0)
    node = OmegaConf.create({"transform": "invert", "fraction": 0.1, "seed": 3})
    assert Subgroup.from_config(node) == Subgroup("invert", 0.1, 3)


@pytest.mark.parametrize(
    ("node", "words"),
    [
        ("fog", "unknown data.subgroup transform 'fog'"),
        ({"transform": "blur", "fraction": 1.0}, "data.subgroup.fraction=1.0 must lie in (0, 1)"),
        ({"transform": "blur", "fraction": 0}, "must lie in (0, 1)"),
        ({"transform": "blur", "fraction": "lots"}, "data.subgroup.fraction must be a number"),
        ({"transform": "blur", "fractoin": 0.1}, "unknown data.subgroup key 'fractoin'"),
        ({"transform": "blur", "seed": -1}, "data.subgroup.seed must be a non-negative"),
        ({"fraction": 0.1}, "a mapping with a transform"),
    ],
)
def test_bad_settings_are_user_errors(node, words) -> None:
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Subgroup.from_config(node)


# -- in the data module -----------------------------------------------------------------------


def raw_uint8(data: RealDataModule, x: torch.Tensor) -> torch.Tensor:
    return (data.denormalize(x) * 255).round().to(torch.uint8)


def test_the_data_module_alters_train_and_val_and_keeps_the_test_set(tmp_path) -> None:
    make_tree(tmp_path, ["a", "b", "c"], n_train=20, n_test=4)
    common = {"name": "image_folder", "root": str(tmp_path), "mean": [0.5] * 3, "std": [0.25] * 3}
    plain = RealDataModule(**common, val_fraction=0.2)
    sub = RealDataModule(
        **common, val_fraction=0.2, subgroup={"transform": "invert", "fraction": 0.25}
    )
    plain.setup()
    sub.setup()
    assert plain.train_subgroup is None and plain.subgroup_test_set() is None
    for split, n_per_class in (("train", 4), ("val", 1)):  # 16 train, 4 val per class
        x, members = getattr(sub, f"{split}_x"), getattr(sub, f"{split}_subgroup")
        y, clean = getattr(sub, f"{split}_y"), getattr(plain, f"{split}_x")
        assert torch.bincount(y[members]).tolist() == [n_per_class] * 3
        assert torch.equal(x[~members], clean[~members])
        assert torch.equal(raw_uint8(sub, x[members]), 255 - raw_uint8(plain, clean[members]))
    assert torch.equal(sub.test_x, plain.test_x)  # scored as it is ...
    name, altered = sub.subgroup_test_set()  # ... and fully altered, in the same input space
    assert name == "invert" and altered.shape == sub.test_x.shape
    assert torch.allclose(altered, sub.normalize(255 - sub.test_uint8))


def test_the_zca_fit_is_keyed_by_the_subgroup(tmp_path) -> None:
    common = {
        "name": "digits",
        "mean": [0.3],
        "std": [0.4],
        "zca": True,
        "cache_dir": str(tmp_path),
    }
    plain, sub = RealDataModule(**common), RealDataModule(**common, subgroup="invert")
    plain.setup()
    sub.setup()
    assert len(list(tmp_path.glob("zca-*.pt"))) == 2  # not the clean split's cached fit
    assert not torch.allclose(plain.zca.transform, sub.zca.transform)
    name, altered = sub.subgroup_test_set()
    assert torch.allclose(altered, sub.zca.whiten(sub.normalize(255 - sub.test_uint8)), atol=1e-5)


# -- metrics ----------------------------------------------------------------------------------


def test_worst_group_accuracy_is_the_per_network_minimum() -> None:
    data = EasyData(per_class=2)
    test_x, test_y = data.test
    metrics = evaluate_synset(
        *data.train,
        data,
        {"mlp": mlp_factory()},
        frozen_eval(num_nets=3),
        CPU,
        5,
        known_group=lambda: ("invert", -test_x),
    )
    y = test_y.numpy()
    clean = [100 * np.mean(initial_predictions(test_x, 5, "mlp", i) == y) for i in range(3)]
    flipped = [100 * np.mean(initial_predictions(-test_x, 5, "mlp", i) == y) for i in range(3)]
    worst = np.minimum(clean, flipped)
    assert metrics["group_clean_acc"] == pytest.approx(metrics["test_acc"])
    assert metrics["group_invert_acc"] == pytest.approx(np.mean(flipped), abs=1e-4)
    assert metrics["worst_group_acc"] == pytest.approx(np.mean(worst), abs=1e-4)
    assert metrics["mlp/worst_group_acc_std"] == pytest.approx(np.std(worst), abs=1e-4)


def test_a_run_reports_both_known_groups(tmp_path) -> None:
    cfg = compose_config(
        *TINY,
        "matching=random",
        "eval.shifts=[]",
        "eval.corruptions=[]",
        "data.subgroup=invert",
        output_dir=tmp_path,
    )
    metrics = run(cfg)
    assert metrics["group_clean_acc"] == metrics["test_acc"]
    # one network: its worst group is exactly the lower of the two
    assert metrics["worst_group_acc"] == min(metrics["test_acc"], metrics["group_invert_acc"])
    (arch,) = [k.split("/")[0] for k in metrics if k.endswith("/test_acc")]
    for key in ("group_invert_acc", "group_clean_acc", "worst_group_acc"):
        assert metrics[f"{arch}/{key}"] == metrics[key] and f"{key}_std" in metrics
    assert read_metrics(tmp_path) == pytest.approx(metrics)
    details = json.loads((tmp_path / "eval_details.json").read_text())
    assert details["subgroup"] == {"transform": "invert", "fraction": 0.05, "seed": 0}
    summary = (tmp_path / "summary.txt").read_text()
    assert "invert group %" in summary and "worst group %" in summary


# -- the report -------------------------------------------------------------------------------


def write_subgroup_run(path: Path, seed: int, clean: float, altered: float) -> Path:
    """A finished run of the invert benchmark on digits with known group figures."""
    path.mkdir(parents=True)
    config = {
        "data": {"name": "digits", "subgroup": {"transform": "invert", "seed": seed}},
        "matching": {"name": "dm"},
        "ipc": 10,
        "risk": {"name": "none"},
        "seed": seed,
    }
    OmegaConf.save(config, path / "config.yaml")
    figures = {
        "test_acc": clean,
        "worst_cluster_acc": clean - 9,
        "group_clean_acc": clean,
        "group_invert_acc": altered,
        "worst_group_acc": min(clean, altered),
    }
    metrics = figures | {f"{k}_std": 1.0 for k in figures}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_the_report_shows_the_known_groups_beside_worst_cluster(tmp_path) -> None:
    write_subgroup_run(tmp_path / "0", 0, 60.0, 20.0)
    write_subgroup_run(tmp_path / "1", 1, 62.0, 30.0)
    (row,) = aggregate(find_runs([tmp_path]))
    header, cells = tables(markdown_table([row]))[0]
    assert header[5:] == ["clean", "worst cluster", "invert group", "worst group"]
    assert cells[:4] == ["digits+invert", "dm", "10", "none"]  # its own benchmark, seeds merged
    assert cells[7:] == ["25.00 ± 5.00", "25.00 ± 5.00"]
