"""rdd.imports: files fabricated as each reference tool writes them, converted into rdd's input
space and checked against the tools' own constants (typed here from their source)."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from rdd.config.errors import UserError
from rdd.data.cache import load_dataset
from rdd.imports import convert, read_foreign, resolve_format
from tests.conftest import compose_config

# VICO-UoE/DatasetCondensation utils.get_dataset and MTT utils.get_dataset.
VICO_CIFAR100 = ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762])
MTT_CIFAR = ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])  # MTT: CIFAR-100 too
RDD_CIFAR100 = ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762])  # conf/data/cifar100.yaml


def normalised(pixels: torch.Tensor, stats) -> torch.Tensor:
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
    return (pixels - mean) / std


def fake_cifar100(size: int = 4) -> SimpleNamespace:
    """What convert() needs of a set-up RealDataModule: CIFAR-100 shapes, rdd's normalisation."""
    return SimpleNamespace(
        name="cifar100",
        channel=3,
        im_size=(size, size),
        num_classes=100,
        from_pixels=lambda x: normalised(x, RDD_CIFAR100),
    )


def cifar_pixels(n: int = 200) -> torch.Tensor:
    return torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(1))


def save_vico(path: Path, experiments: list[torch.Tensor], labels: torch.Tensor) -> Path:
    """As main.py: data_save.append([image_syn, label_syn]); accs hold np.float64."""
    data = [[images, labels] for images in experiments]
    accs = {"ConvNet": [np.float64(0.41), np.float64(0.43)]}
    torch.save({"data": data, "accs_all_exps": accs}, path)
    return path


def test_vico_res_file_round_trips_to_pixels_with_the_tool_constants(tmp_path) -> None:
    pixels = cifar_pixels()
    labels = torch.arange(100).repeat_interleave(2)
    path = save_vico(
        tmp_path / "res_DM_CIFAR100_ConvNet_2ipc.pt",
        [normalised(pixels, VICO_CIFAR100), torch.zeros(200, 3, 4, 4)],
        labels,
    )
    assert resolve_format(path, "auto") == "vico"
    raw = read_foreign(path, "vico", experiment=0)
    assert raw.method == "dm" and raw.dataset == "cifar100" and "experiment 0 of 2" in raw.detail
    imported = convert(raw, fake_cifar100(), {"mean": None, "std": None}, "auto", 1)
    torch.testing.assert_close(imported.images, normalised(pixels, RDD_CIFAR100))
    assert torch.equal(imported.labels, labels) and imported.per_class.tolist() == [2] * 100
    second = convert(read_foreign(path, "vico", 1), fake_cifar100(), {}, "auto", 1)
    vico_mean = torch.tensor(VICO_CIFAR100[0]).view(1, 3, 1, 1).expand(200, 3, 4, 4)
    torch.testing.assert_close(second.images, normalised(vico_mean, RDD_CIFAR100))
    with pytest.raises(UserError, match=r"exp=2 is out of range.*choose exp=0\.\.1"):
        read_foreign(path, "vico", experiment=2)


def test_mtt_uses_cifar10_constants_for_cifar100_and_reads_the_learned_lr(tmp_path) -> None:
    pixels = cifar_pixels()
    labels = torch.arange(100).repeat_interleave(2)
    run = tmp_path / "logged_files" / "CIFAR100" / "run"
    run.mkdir(parents=True)
    torch.save(normalised(pixels, MTT_CIFAR), run / "images_best.pt")
    torch.save(labels, run / "labels_best.pt")
    torch.save(torch.tensor(0.0123, requires_grad=True), run / "lr_best.pt")
    assert resolve_format(run, "auto") == "mtt" == resolve_format(run / "images_best.pt", "auto")
    raw = read_foreign(run, "mtt")
    assert raw.lr == pytest.approx(0.0123) and raw.method == "mtt"  # rdd's name, as matching=mtt
    with pytest.raises(UserError, match="normalization=mtt"):
        convert(raw, fake_cifar100(), {}, "auto", 1)  # ZCA or mean/std: the file cannot tell
    imported = convert(raw, fake_cifar100(), "mtt", "auto", 1)
    torch.testing.assert_close(imported.images, normalised(pixels, RDD_CIFAR100))
    # images_zca_<it>.pt: MTT's whitening undone, i.e. pixels.
    torch.save(pixels, run / "images_zca_best.pt")
    zca_file = convert(
        read_foreign(run / "images_zca_best.pt", "mtt"), fake_cifar100(), {}, "auto", 1
    )
    torch.testing.assert_close(zca_file.images, normalised(pixels, RDD_CIFAR100))


@pytest.fixture(scope="module")
def digits8():
    """rdd's digits at their native 8x8, set up."""
    data = instantiate(compose_config("data.image_size=8").data)
    data.setup()
    return data


def test_zca_is_undone_with_the_tool_fit(digits8) -> None:
    """normalization=zca: kornia's ZCAWhitening(eps=0.1) fitted on the whole training split in
    [0, 1], written out here with NumPy as the oracle."""
    full = load_dataset("digits", None, image_size=8, cache_dir=digits8.cache_dir).train_x
    x = full.double().reshape(len(full), -1).numpy() / 255.0
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)  # unbiased, as kornia
    s, u = np.linalg.eigh(cov)
    whiten = u @ np.diag(1.0 / np.sqrt(np.clip(s, 0, None) + 0.1)) @ u.T
    pixels = full[:20].double().reshape(20, -1).numpy() / 255.0
    stored = torch.from_numpy((pixels - mean) @ whiten).float().view(20, 1, 8, 8)
    raw = SimpleNamespace(
        images=stored, labels=torch.arange(10).repeat(2), fmt="mtt", normalization=None,
        lr=None, detail="",
    )  # fmt: skip
    imported = convert(raw, digits8, "zca", "auto", 1)
    expected = digits8.from_pixels(torch.from_numpy(pixels).float().view(20, 1, 8, 8))
    torch.testing.assert_close(imported.images, expected, atol=2e-4, rtol=1e-4)


def test_idm_pickle_is_read_without_running_code(tmp_path) -> None:
    images, labels = torch.randn(20, 1, 8, 8), torch.arange(10).repeat_interleave(2)
    path = tmp_path / "acc_0.42.pkl"
    with path.open("wb") as handle:  # as IDM_cifar10.py: pickle.dump((image_syn, label_syn))
        pickle.dump((images, labels), handle)
    assert resolve_format(path, "auto") == "idm"
    raw = read_foreign(path, "idm")
    assert torch.equal(raw.images, images) and torch.equal(raw.labels, labels)
    assert raw.normalization is None  # MTT's get_dataset: mean/std or --zca
    assert raw.method == "idm"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "executed",))

    evil = tmp_path / "acc_0.99.pkl"
    evil.write_bytes(pickle.dumps((Payload(), labels)))
    with pytest.raises(UserError, match=r"holds code \(.*pathlib.*so it was not loaded"):
        read_foreign(evil, "idm")
    assert not (tmp_path / "executed").exists()


def test_idm_factor_expands_like_number_sign_augment(digits8) -> None:
    """IDM's --aug: tiles a (top-left), b (bottom-left), c (top-right), d (bottom-right), each
    upsampled bilinearly, images concatenated in that order with labels repeated."""
    stored = torch.randn(10, 1, 8, 8)
    labels = torch.arange(10)
    raw = SimpleNamespace(
        images=stored, labels=labels, fmt="idm", normalization=None, lr=None, detail=""
    )
    imported = convert(raw, digits8, "dataset", "auto", 2)
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="bilinear")  # noqa: E731
    a, b = stored[:, :, :4, :4], stored[:, :, 4:, :4]
    c, d = stored[:, :, :4, 4:], stored[:, :, 4:, 4:]
    torch.testing.assert_close(imported.images, torch.cat([up(a), up(b), up(c), up(d)]))
    assert torch.equal(imported.labels, labels.repeat(4)) and imported.per_class.sum() == 10


def plain(images: torch.Tensor, labels: torch.Tensor):
    return SimpleNamespace(
        images=images, labels=labels, fmt="plain", normalization=None, lr=None, detail=""
    )


def test_soft_labels_probabilities_logits_and_shapes(digits8) -> None:
    images = torch.rand(10, 1, 8, 8)
    probs = torch.rand(10, 10).softmax(1)
    kept = convert(plain(images, probs), digits8, "pixels", "auto", 1)
    assert torch.equal(kept.labels, probs) and "probabilities" in kept.description
    logits = torch.randn(10, 10) * 3
    soft = convert(plain(images, logits), digits8, "pixels", "auto", 1)
    torch.testing.assert_close(
        soft.labels, torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    )
    assert "logits" in soft.description
    with pytest.raises(UserError, match=r"soft labels must be \(N, 10\)"):
        convert(plain(images, torch.rand(10, 7)), digits8, "pixels", "auto", 1)
    with pytest.raises(UserError, match="soft_labels=logits"):
        convert(plain(images, logits), digits8, "pixels", "probs", 1)


def test_a_plain_file_needs_its_normalisation_stated(tmp_path, digits8) -> None:
    pixels = torch.rand(10, 1, 8, 8)
    path = tmp_path / "set.pt"
    torch.save({"images": pixels * 2 - 1, "labels": torch.arange(10)}, path)
    raw = read_foreign(path, resolve_format(path, "auto"))
    with pytest.raises(UserError, match="normalization=pixels"):
        convert(raw, digits8, {"mean": None, "std": None}, "auto", 1)
    stated = convert(raw, digits8, {"mean": [0.5], "std": [0.5]}, "auto", 1)
    torch.testing.assert_close(stated.images, digits8.from_pixels(pixels))
    with pytest.raises(UserError, match="unknown normalization 'sRGB'"):
        convert(raw, digits8, "sRGB", "auto", 1)
    with pytest.raises(UserError, match="vico has no normalisation constants for digits"):
        convert(raw, digits8, "vico", "auto", 1)


def test_mismatches_are_one_line_errors(tmp_path, digits8) -> None:
    path = tmp_path / "set.pt"
    torch.save({"images": torch.rand(10, 1, 8, 8), "labels": torch.arange(9)}, path)
    with pytest.raises(UserError, match="has 10 images but 9 labels"):
        read_foreign(path, "plain")
    wrong = plain(torch.rand(10, 1, 16, 16), torch.arange(10))
    with pytest.raises(UserError, match="images are 1x16x16 but digits gives 1x8x8"):
        convert(wrong, digits8, "pixels", "auto", 1)
    with pytest.raises(UserError, match="unknown synset_format 'dc'"):
        resolve_format(path, "dc")
