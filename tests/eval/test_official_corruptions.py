"""eval.corruptions_root: the published CIFAR-10-C arrays, on small fabricated .npy files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rdd.config.errors import UserError
from rdd.eval.official_corruptions import corruption_source
from rdd.eval.shifted_sets import check_shift_settings, shifted_test_sets
from rdd.outputs.files import write_eval_outputs
from tests.eval.test_shifted_sets import TinyTestSet

N = 6  # TinyTestSet's test images: (6, 3, 8, 8)


class LabelledTestSet(TinyTestSet):
    def __init__(self, cache_dir) -> None:
        super().__init__(cache_dir)
        self.test_y = torch.tensor([3, 1, 4, 1, 5, 9])


def fabricate(root, names=("contrast", "fog"), n: int = N, shape=(8, 8, 3), labels=None):
    """CIFAR-10-C's layout: labels.npy (5n,) and <name>.npy (5n, H, W, C) uint8, severity s
    in rows [(s - 1) n, s n); here pixel values encode (corruption, severity, image)."""
    root.mkdir(exist_ok=True)
    y = np.array([3, 1, 4, 1, 5, 9]) if labels is None else labels
    np.save(root / "labels.npy", np.tile(y, 5).astype(np.uint8))
    gen = np.random.default_rng(0)
    for k, name in enumerate(names):
        np.save(root / f"{name}.npy", gen.integers(0, 256, (5 * n, *shape), dtype=np.uint8) + k)
    return root


def settings(root, corruptions=("contrast", "fog"), **more):
    base = {"shifts": ["invert"], "corruptions": list(corruptions), "severities": [2, 5]}
    return OmegaConf.create(base | {"shift_seed": 0, "corruptions_root": root and str(root)} | more)


def test_the_official_blocks_are_scored_under_the_usual_names(tmp_path) -> None:
    root = fabricate(tmp_path / "CIFAR-10-C")
    data = LabelledTestSet(None)
    sets = dict(shifted_test_sets(data, settings(root))())
    # fog has no generator in rdd: with the official arrays every released file is usable.
    assert list(sets) == [
        "invert",
        "corruption_contrast_s2",
        "corruption_contrast_s5",
        "corruption_fog_s2",
        "corruption_fog_s5",
    ]
    for name in ("contrast", "fog"):
        array = np.load(root / f"{name}.npy")
        for severity in (2, 5):
            block = array[(severity - 1) * N : severity * N]  # (N, H, W, C)
            expected = data.from_pixels(torch.from_numpy(block).permute(0, 3, 1, 2))
            assert torch.equal(sets[f"corruption_{name}_s{severity}"], expected)
    generated = settings(None, corruptions=("contrast",))
    plain = dict(shifted_test_sets(data, generated)())
    assert torch.equal(sets["invert"], plain["invert"])  # the shifts are still ours
    assert not torch.equal(sets["corruption_contrast_s5"], plain["corruption_contrast_s5"])


def damaged(root, change):
    change(root)
    return root


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: (r / "labels.npy").unlink(), "no labels.npy in eval.corruptions_root"),
        (lambda r: np.save(r / "labels.npy", np.zeros(5 * N + 1, int)), "not 5 x 6 integer"),
        (lambda r: np.save(r / "labels.npy", np.tile([1, 3, 4, 1, 5, 9], 5)), "in its order"),
        (lambda r: np.save(r / "fog.npy", np.zeros((5 * N, 8, 8, 1), np.uint8)), "not uint8"),
        (lambda r: np.save(r / "fog.npy", np.zeros((5 * N, 8, 8, 3), np.float32)), "float32"),
        (
            lambda r: np.save(r / "fog.npy", np.zeros((4 * N, 8, 8, 3), np.uint8)),
            r"\(30, 8, 8, 3\)",
        ),
        (lambda r: (r / "fog.npy").write_bytes(b"not numpy"), "cannot read"),
    ],
)
def test_bad_arrays_are_one_line_errors_before_any_scoring(tmp_path, change, words) -> None:
    root = damaged(fabricate(tmp_path / "c"), change)
    with pytest.raises(UserError, match=words) as err:
        shifted_test_sets(LabelledTestSet(None), settings(root))  # eager: before distilling
    assert "\n" not in str(err.value)


def test_the_settings_check_finds_missing_files_without_the_data(tmp_path) -> None:
    root = fabricate(tmp_path / "c")
    check_shift_settings(settings(root))
    with pytest.raises(UserError, match="no snow.npy .* drop the corruption"):
        check_shift_settings(settings(root, corruptions=("contrast", "snow")))
    with pytest.raises(UserError, match="not a corruption file name"):
        check_shift_settings(settings(root, corruptions=("../c/fog",)))
    with pytest.raises(UserError, match="not a corruption file name"):
        check_shift_settings(settings(root, corruptions=("labels",)))
    with pytest.raises(UserError, match="no labels.npy in eval.corruptions_root"):
        check_shift_settings(settings(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="unknown eval.corruptions entry 'fog'"):  # generated
        check_shift_settings(OmegaConf.merge(settings(root), {"corruptions_root": None}))


def test_eval_details_say_where_the_corruptions_came_from(tmp_path) -> None:
    data = SimpleNamespace(class_names=["a"], subgroup=None)
    evaluation = SimpleNamespace(details={})
    for root, start in ((tmp_path / "c", "official arrays in"), (None, "regenerated")):
        write_eval_outputs(tmp_path, {}, evaluation, data, settings(root))
        details = json.loads((tmp_path / "eval_details.json").read_text())
        assert details["corruptions_source"].startswith(start)
    assert str(tmp_path / "c") in corruption_source(settings(tmp_path / "c"))


def test_the_eval_schema_takes_the_key() -> None:
    from tests.conftest import compose_config

    assert compose_config().eval.corruptions_root is None
    assert compose_config("eval.corruptions_root=/data/CIFAR-10-C").eval.corruptions_root == (
        "/data/CIFAR-10-C"
    )
