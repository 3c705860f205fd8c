"""ZCA whitening: the transform against a NumPy oracle, its cache, the data module, synthetic
sets that carry it, and rdd.evaluate applying a set's stored transform."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import rdd.data.zca as zca_module
from rdd.config.errors import UserError
from rdd.data import RealDataModule, load_dataset
from rdd.data.zca import ZCA, load_or_fit
from rdd.synset import SyntheticSet, class_grouped_labels
from tests.conftest import compose_config


def images(n: int, shape=(3, 4, 4), seed: int = 0) -> torch.Tensor:
    """Correlated pixels with eigenvalues spread over orders of magnitude, plus an offset."""
    gen = torch.Generator().manual_seed(seed)
    d = int(np.prod(shape))
    mixing = torch.randn(d, d, generator=gen) * torch.logspace(-2, 1, d).view(-1, 1)
    x = torch.randn(n, d, generator=gen) @ mixing + torch.randn(d, generator=gen)
    return x.view(n, *shape)


def numpy_zca(x: torch.Tensor, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent oracle: mean, eigenvalues S and U diag(1/sqrt(S+eps)) U^T, in float64."""
    flat = x.reshape(len(x), -1).double().numpy()
    cov = np.cov(flat, rowvar=False)  # unbiased (N - 1)
    s, u = np.linalg.eigh(cov)
    s = np.clip(s, 0, None)
    return flat.mean(0), s, u @ np.diag(1 / np.sqrt(s + eps)) @ u.T


# kornia computes the covariance in the images' dtype. In float64 it matches the oracle to
# rounding (measured 5e-8 relative on T). MTT fits float32 images: on these pixels, whose
# covariance spans eigenvalues 1e-4 to 4e3, float32's covariance is off by ~1e-7 * 4e3, which
# moves T by up to 4.4e-4 relative and the whitened values by 8e-4 (measured); real images are
# far better conditioned (tests/fixtures/parity_zca.pt).
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-6), (torch.float32, 2e-3)])
@pytest.mark.parametrize("n", [400, 20])  # N > D = 48, and a rank-deficient N < D
def test_whitening_matches_numpy(n: int, dtype: torch.dtype, rtol: float) -> None:
    x = images(n)
    mean, s, transform = numpy_zca(x, eps=0.1)
    zca = ZCA.fit(x.to(dtype), eps=0.1)
    scale = np.abs(transform).max()
    assert np.allclose(zca.transform.double().numpy(), transform, rtol=0, atol=rtol * scale)
    inverse = zca.transform_inv.double().numpy()  # U diag(sqrt(S + eps)) U^T inverts T
    # Both are stored in float32: their product carries ~1e-6 of rounding either way.
    assert np.allclose(inverse @ transform, np.eye(48), rtol=0, atol=max(rtol, 1e-5))
    expected = (x.reshape(n, -1).double().numpy() - mean) @ transform
    got = zca.whiten(x)
    assert got.shape == x.shape and got.dtype == torch.float32
    # Whitening in float32 (pixels up to ~70 here) adds ~1e-6 relative rounding either way.
    white_atol = max(rtol, 1e-5) * np.abs(expected).max()
    assert np.allclose(got.reshape(n, -1).double().numpy(), expected, atol=white_atol)
    # The whitened covariance is U diag(S / (S + eps)) U^T: its eigenvalues are S / (S + eps).
    whitened_eigvals = np.linalg.eigvalsh(np.cov(expected, rowvar=False))
    assert np.allclose(np.sort(s / (s + 0.1)), whitened_eigvals, atol=1e-6)
    got_cov = np.cov(got.reshape(n, -1).double().numpy(), rowvar=False)
    assert np.allclose(np.linalg.eigvalsh(got_cov), whitened_eigvals, atol=max(rtol, 1e-5))


def test_tiny_eps_gives_identity_covariance() -> None:
    x = images(2000).double()  # a float64 fit: float32's covariance is too coarse for eps 1e-8
    white = ZCA.fit(x, eps=1e-8).whiten(x).reshape(len(x), -1).double()
    assert torch.allclose(white.mean(0), torch.zeros(48, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(torch.cov(white.T), torch.eye(48, dtype=torch.float64), atol=1e-3)


def test_unwhiten_inverts_whiten_on_any_shape_and_dtype() -> None:
    x = images(50)
    zca = ZCA.fit(x[:30], eps=0.1)  # also for data it was not fitted on
    # A float32 round trip through a transform of condition number ~200 (eigenvalues up to
    # ~4e3 against eps 0.1) loses ~1e-5 of the data's scale (measured: 2.2e-4 on values up to
    # 69; an absolute 1e-4 failed on this machine's BLAS).
    assert torch.allclose(zca.unwhiten(zca.whiten(x)), x, atol=1e-5 * float(x.abs().max()))
    one = zca.whiten(x[0].double())  # (C, H, W), float64 in and out
    assert one.dtype == torch.float64 and one.shape == (3, 4, 4)
    assert torch.allclose(one.float(), zca.whiten(x)[0], atol=1e-6 * float(x.abs().max()))
    big = images(9000)  # more than one chunk of rows
    assert torch.allclose(zca.unwhiten(zca.whiten(big)), big, atol=1e-5 * float(big.abs().max()))
    with pytest.raises(ValueError, match="48 values"):
        zca.whiten(torch.zeros(2, 3, 5, 5))


def test_state_round_trip() -> None:
    zca = ZCA.fit(images(30), eps=0.05)
    back = ZCA.from_state(zca.state())
    assert back.eps == 0.05 and all(
        torch.equal(getattr(back, k), getattr(zca, k))
        for k in ("mean", "transform", "transform_inv")
    )


def test_legacy_eigendecomposition_state_still_loads() -> None:
    """Sets and cache files written before kornia stored mean, eigvecs, eigvals and eps."""
    x = images(400)
    mean, s, transform = numpy_zca(x, eps=0.1)
    _, u = np.linalg.eigh(np.cov(x.reshape(400, -1).double().numpy(), rowvar=False))
    old = {"mean": torch.tensor(mean).float(), "eigvecs": torch.tensor(u).float()}
    old |= {"eigvals": torch.tensor(s).float(), "eps": 0.1}
    zca = ZCA.from_state(old)
    expected = (x.reshape(400, -1).double().numpy() - mean) @ transform
    assert np.allclose(zca.whiten(x).reshape(400, -1).double().numpy(), expected, atol=1e-4)
    assert torch.allclose(zca.unwhiten(zca.whiten(x)), x, atol=1e-5 * float(x.abs().max()))
    assert set(zca.state()) == {"mean", "transform", "transform_inv", "eps"}


def damaged(change: dict) -> dict:
    return ZCA.fit(images(10, shape=(1, 2, 2)), eps=0.1).state() | change


def legacy(change: dict) -> dict:
    """An old file's state (eigendecomposition of a 4-value covariance), changed."""
    return (
        {"mean": torch.zeros(4), "eigvecs": torch.eye(4), "eigvals": torch.ones(4)}
        | {"eps": 0.1}
        | change
    )


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("not a dict", "must be a dict"),
        ({"mean": torch.zeros(4)}, "must be a dict"),
        (damaged({"transform": torch.eye(3)}), "inconsistent shapes"),
        (damaged({"transform_inv": torch.zeros(4)}), "inconsistent shapes"),
        (damaged({"mean": torch.tensor([1.0, float("nan"), 1.0, 1.0])}), "NaN"),
        (legacy({"eigvals": torch.tensor([1.0, -1.0, 1.0, 1.0])}), "negative"),
        (legacy({"eigvecs": torch.eye(3)}), "inconsistent shapes"),
        (damaged({"mean": torch.zeros(4, dtype=torch.int64)}), "float tensors"),
        (damaged({"eps": 0.0}), "eps"),
        (damaged({"eps": "0.1"}), "eps"),
    ],
)
def test_bad_state_is_rejected(state, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ZCA.from_state(state)


def test_fit_preconditions() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        ZCA.fit(images(1))
    with pytest.raises(ValueError, match="eps"):
        ZCA.fit(images(5), eps=-1.0)


def test_cache_is_written_reused_and_refitted_when_corrupt(tmp_path, monkeypatch) -> None:
    x = images(40)
    fitted = load_or_fit(x, 0.1, tmp_path, key="data-a")
    (path,) = tmp_path.iterdir()
    assert re.fullmatch(r"zca-[0-9a-f]{16}\.pt", path.name)

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again instead of loading the cache")

    with monkeypatch.context() as m:
        m.setattr(ZCA, "fit", no_fit)
        cached = load_or_fit(x, 0.1, tmp_path, key="data-a")
    assert torch.equal(cached.transform, fitted.transform) and cached.eps == 0.1
    load_or_fit(x, 0.2, tmp_path, key="data-a")  # another eps or key: another file
    load_or_fit(x, 0.1, tmp_path, key="data-b")
    assert len(list(tmp_path.iterdir())) == 3

    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        refitted = load_or_fit(x, 0.1, tmp_path, key="data-a")
    assert torch.equal(refitted.transform, fitted.transform)
    assert torch.equal(ZCA.from_state(torch.load(path, weights_only=True)).mean, fitted.mean)
    assert load_or_fit(x, 0.1, None, key="data-a").eps == 0.1  # no cache dir: no file
    assert len(list(tmp_path.iterdir())) == 3


def kornia_style_zca(train: np.ndarray, eps: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(mean, transform) as kornia's ZCAWhitening fits them: the unbiased covariance of the
    centred flattened images, U diag(1 / sqrt(S + eps)) U^T, in NumPy float64."""
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean = flat.mean(0)
    cov = (flat - mean).T @ (flat - mean) / (len(flat) - 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    return mean, eigvecs @ np.diag(1 / np.sqrt(np.clip(eigvals, 0, None) + eps)) @ eigvecs.T


def test_datamodule_whitens_raw_pixels_as_mtt_does(tmp_path) -> None:
    """MTT fits kornia's ZCAWhitening(eps=0.1) on ToTensor() images ([0, 1], no mean/std):
    every split is whitened with the train split's fit in that space, whatever data.mean/std
    say (they are not applied with ZCA)."""
    raw = RealDataModule(name="digits", mean=[0.0], std=[1.0])  # ToTensor(): pixels / 255
    raw.setup()
    dm = RealDataModule(name="digits", mean=[0.3], std=[0.4], zca=True, cache_dir=str(tmp_path))
    dm.setup()
    assert raw.zca is None and isinstance(dm.zca, ZCA) and dm.zca.eps == 0.1
    assert dm.mean == (0.0,) and dm.std == (1.0,)
    assert len(list(tmp_path.glob("zca-*.pt"))) == 1
    mean, transform = kornia_style_zca(raw.train_x.numpy())  # train only: val and test held out
    for split in ("train_x", "val_x", "test_x"):
        pixels = getattr(raw, split).numpy().reshape(len(getattr(raw, split)), -1)
        expected = ((pixels - mean) @ transform).reshape(getattr(dm, split).shape)
        assert np.allclose(getattr(dm, split).numpy(), expected, atol=1e-4), split
    pixels = load_dataset("digits", None).test_x.float() / 255
    assert torch.allclose(dm.denormalize(dm.test_x), pixels, atol=1e-5)
    assert torch.allclose(dm.denormalize(dm.test_x[0]), pixels[0], atol=1e-5)


def test_apply_zca_whitens_once(tmp_path) -> None:
    zca = ZCA.fit(images(30, shape=(1, 8, 8)))
    dm = RealDataModule(name="digits", mean=[0.3], std=[0.4])
    dm.apply_zca(zca)  # sets the data up first
    plain = RealDataModule(name="digits", mean=[0.3], std=[0.4])
    plain.setup()
    assert dm.zca is zca and torch.allclose(dm.val_x, zca.whiten(plain.val_x))
    with pytest.raises(ValueError, match="already ZCA-whitened"):
        dm.apply_zca(zca)


def test_zca_eps_must_be_positive() -> None:
    with pytest.raises(UserError, match="data.zca_eps"):
        RealDataModule(name="digits", zca=True, zca_eps=0.0)


def whitened_set(num_classes: int = 3, ipc: int = 2) -> tuple[SyntheticSet, torch.Tensor]:
    """A synthetic set stored whitened, and its pixels in [0, 1]."""
    pixels = torch.rand(num_classes * ipc, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    meta = {"dataset": "fake", "num_classes": num_classes, "mean": [0.5, 0.4, 0.3]}
    meta |= {"std": [0.2, 0.2, 0.2], "ipc": ipc, "method": "mtt", "config": "ipc: 2\n"}
    mean, std = torch.tensor(meta["mean"]).view(3, 1, 1), torch.tensor(meta["std"]).view(3, 1, 1)
    zca = ZCA.fit(images(100))
    labels = class_grouped_labels(num_classes, ipc)
    return SyntheticSet(zca.whiten((pixels - mean) / std), labels, meta, zca=zca), pixels


def test_synset_keeps_its_zca(tmp_path) -> None:
    synset, pixels = whitened_set()
    assert torch.allclose(synset.denormalized(), pixels, atol=1e-5)
    synset.save(tmp_path / "synset.pt")
    payload = torch.load(tmp_path / "synset.pt", weights_only=True)  # tensors and floats only
    assert payload["meta"]["zca"] is True
    loaded = SyntheticSet.load(tmp_path)
    assert loaded.meta["zca"] is True and torch.equal(loaded.zca.transform, synset.zca.transform)
    assert loaded.zca.eps == synset.zca.eps
    assert torch.allclose(loaded.denormalized(), pixels, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"zca": {"mean": torch.zeros(3)}}, "damaged ZCA"),
        ({"zca": ZCA.fit(images(10, shape=(1, 2, 2))).state()}, "4 values, not 48"),
        ({"zca": None}, "metadata says ZCA"),
    ],
)
def test_damaged_zca_in_a_synset_is_a_user_error(tmp_path, change, words) -> None:
    path = whitened_set()[0].save(tmp_path / "synset.pt")
    torch.save(torch.load(path, weights_only=True) | change, path)
    with pytest.raises(UserError, match=words):
        SyntheticSet.load(path)


def test_rdd_evaluate_applies_the_stored_zca(tmp_path, monkeypatch) -> None:
    """The real data gets the set's stored transform, even if its config asked for a fit."""
    import rdd.data.datamodule as datamodule_module
    import rdd.evaluate as evaluate_module
    from rdd.eval.scoring import Evaluation

    run_cfg = compose_config(
        "data=digits", "data.zca=true", "ipc=1", "logger=none", output_dir=tmp_path / "run"
    )
    zca = ZCA.fit(images(30, shape=(1, 16, 16)))  # unlike any fit on digits
    meta = {"dataset": "digits", "num_classes": 10, "mean": [0.3058], "std": [0.3764]}
    meta |= {"ipc": 1, "method": "mtt", "config": OmegaConf.to_yaml(run_cfg, resolve=True)}
    SyntheticSet(torch.randn(10, 1, 16, 16), class_grouped_labels(10, 1), meta, zca=zca).save(
        tmp_path / "synset.pt"
    )
    seen = {}

    def record(images, labels, data, *args, **kwargs):
        seen["data"] = data
        return Evaluation(
            {f"{k}{s}": 0.0 for k in ("test_acc", "val_acc") for s in ("", "_std")}, {}
        )

    def no_fit(*args, **kwargs):
        raise AssertionError("refitted instead of using the stored transform")

    monkeypatch.setattr(evaluate_module, "evaluate_synset", record)
    monkeypatch.setattr(datamodule_module, "load_or_fit", no_fit)
    cfg = compose_config(
        f"synset={tmp_path / 'synset.pt'}",
        "eval.epochs=2",
        "eval.num_nets=1",
        config_name="evaluate",
        output_dir=tmp_path / "evaluated",
    )
    evaluate_module.evaluate(cfg)
    data = seen["data"]
    plain = instantiate(run_cfg.data, zca=False)
    plain.setup()
    assert data.zca is not None and torch.equal(data.zca.transform, zca.transform)
    for split in ("train_x", "val_x", "test_x"):
        assert torch.allclose(getattr(data, split), zca.whiten(getattr(plain, split)), atol=1e-5)


def test_fit_refuses_huge_images(monkeypatch) -> None:
    monkeypatch.setattr(zca_module, "MAX_DIM", 40)
    with pytest.raises(ValueError, match="data.zca=false"):
        ZCA.fit(images(5))


def test_zca_equals_kornias_as_mtt_fits_it(tmp_path) -> None:
    """tests/fixtures/parity_zca.pt: kornia's ZCAWhitening(eps=0.1) fitted on the raw digits
    train split, applied to test images (benchmarks/parity/zca_parity.py --record). Since rdd
    fits with kornia itself, the difference is only that of the kornia version and BLAS the
    fixture was recorded with (measured 1.9e-6 max relative difference with kornia 0.9.0)."""
    import importlib.util

    from tests.conftest import REPO

    path = REPO / "benchmarks" / "parity" / "zca_parity.py"
    spec = importlib.util.spec_from_file_location("zca_parity", path)
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    reference = torch.load(parity.FIXTURE, weights_only=True)["whitened"]
    ours = parity.rdd_whitened(cache_dir=str(tmp_path))
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_whiten_and_unwhiten_are_kornias_forward_and_inverse() -> None:
    """Applied in row chunks after a save and load, the transforms still equal kornia's
    module's forward and inverse_transform (measured: bitwise equal on this machine)."""
    from kornia.enhance import ZCAWhitening

    x = images(300)
    kornia_zca = ZCAWhitening(eps=0.1, compute_inv=True).fit(x)
    ours = ZCA.from_state(ZCA.fit(x, eps=0.1).state())  # also through the saved state
    test = images(5000, seed=1)  # more than one chunk of rows
    white = kornia_zca(test.reshape(len(test), -1)).view_as(test)
    assert torch.allclose(ours.whiten(test), white, rtol=0, atol=1e-6 * float(white.abs().max()))
    back = kornia_zca.inverse_transform(white.reshape(len(test), -1)).view_as(test)
    assert torch.allclose(ours.unwhiten(white), back, rtol=0, atol=1e-6 * float(back.abs().max()))
