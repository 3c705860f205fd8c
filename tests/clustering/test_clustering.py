"""Tests for rdd.clustering: FAISS k-means, nearest-synthetic grouping, the clusterer modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from rdd.clustering import (
    KMeansClusterer,
    NearestSyntheticClusterer,
    embed_in_batches,
    faiss_kmeans,
    nearest_synthetic,
    per_class_kmeans,
)
from rdd.config.compose import CONF_DIR
from rdd.nets import build_net
from tests.conftest import compose_config

OPTIONS = sorted(p.stem for p in (CONF_DIR / "clustering").glob("*.yaml"))
TINY_NET = {"_target_": "rdd.nets.convnet.ConvNet", "width": 8, "depth": 1}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors gain nothing from OpenMP threads, which spin on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(centres: Tensor, per_blob: int, spread: float = 0.05, seed: int = 0) -> tuple:
    """``per_blob`` points around every row of ``centres``; returns (points, true blob ids)."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.arange(centres.shape[0]).repeat_interleave(per_blob)
    points = centres[truth] + spread * torch.randn(
        truth.numel(), centres.shape[1], generator=generator
    )
    return points, truth


def same_partition(a: Tensor, b: Tensor) -> bool:
    """Whether two labelings split the points identically, up to renaming the labels."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# --- faiss_kmeans / per_class_kmeans -------------------------------------------------------


def test_kmeans_recovers_well_separated_blobs() -> None:
    centres = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    points, truth = blobs(centres, per_blob=40)
    centroids, assignments = faiss_kmeans(points, k=4, seed=0, nredo=3)
    assert centroids.shape == (4, 3) and centroids.dtype == torch.float32
    assert assignments.shape == (160,) and assignments.dtype == torch.int64
    assert same_partition(assignments, truth)
    # Every centroid sits on one true centre.
    distance = torch.cdist(centroids, centres).min(dim=1).values
    assert distance.max() < 0.1


def test_kmeans_is_deterministic_for_a_seed() -> None:
    points = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    first = faiss_kmeans(points, k=5, seed=7)
    second = faiss_kmeans(points, k=5, seed=7)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # Other dtypes and non-contiguous inputs are converted, with the same result.
    transposed = points.double().t().contiguous().t()
    assert torch.equal(faiss_kmeans(transposed, k=5, seed=7)[1], first[1])


def test_spherical_kmeans_gives_unit_norm_centroids() -> None:
    points = 3.0 * torch.randn(200, 6, generator=torch.Generator().manual_seed(2))
    centroids, _ = faiss_kmeans(points, k=4, seed=0, spherical=True)
    assert torch.allclose(centroids.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [("k", 0, "k"), ("niter", 0, "niter"), ("nredo", 0, "nredo"), ("k", 11, "k=11")],
)
def test_kmeans_rejects_bad_parameters(option: str, value: int, match: str) -> None:
    kwargs = {"k": 2, "seed": 0} | {option: value}
    with pytest.raises(ValueError, match=match):
        faiss_kmeans(torch.randn(10, 2), **kwargs)


def test_per_class_kmeans_groups_stay_within_their_class() -> None:
    num_classes, k = 3, 2
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(num_classes).repeat(20)[torch.randperm(60, generator=generator)]
    features = torch.randn(60, 4, generator=generator)
    centroids, groups = per_class_kmeans(features, labels, num_classes, k, seed=0)
    assert centroids.shape == (num_classes, k, 4)
    assert groups.shape == (60,) and groups.dtype == torch.int64
    for label in range(num_classes):
        members = groups[labels == label]
        assert members.min() >= label * k and members.max() < (label + 1) * k
    again = per_class_kmeans(features, labels, num_classes, k, seed=0)
    assert torch.equal(again[1], groups) and torch.equal(again[0], centroids)


def test_per_class_kmeans_recovers_subgroups_of_each_class() -> None:
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    points, truth = blobs(centres, per_blob=25)
    labels = truth // 2  # class 0: blobs 0 and 1; class 1: blobs 2 and 3
    _, groups = per_class_kmeans(points, labels, num_classes=2, k=2, seed=0, nredo=2)
    assert same_partition(groups, truth)


def test_per_class_kmeans_names_a_class_smaller_than_k() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"class 1 has 2 points.*k=3"):
        per_class_kmeans(torch.randn(5, 2), labels, num_classes=2, k=3, seed=0)
    with pytest.raises(ValueError, match="class 2 has 0 points"):
        per_class_kmeans(torch.randn(5, 2), labels, num_classes=3, k=1, seed=0)


# --- nearest_synthetic ---------------------------------------------------------------------


def test_nearest_synthetic_stays_within_the_class() -> None:
    syn = torch.tensor([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [10.0, 10.0]])
    syn_labels = torch.tensor([0, 0, 1, 1])
    real = torch.tensor([[0.2, 0.0], [9.0, 0.5], [0.9, 0.0], [9.0, 9.0], [0.5, 0.0]])
    real_labels = torch.tensor([0, 0, 0, 1, 1])
    groups = nearest_synthetic(real, real_labels, syn, syn_labels)
    # Real (0.9, 0) is closest to synthetic 2 (class 1) but joins class 0's nearest, 0;
    # real (0.5, 0) of class 1 ignores synthetic 0 and joins 2.
    assert groups.tolist() == [0, 1, 0, 3, 2]
    assert groups.dtype == torch.int64


def test_nearest_synthetic_needs_a_synthetic_image_per_class() -> None:
    with pytest.raises(ValueError, match="class 2"):
        nearest_synthetic(
            torch.randn(3, 2), torch.tensor([0, 1, 2]), torch.randn(2, 2), torch.tensor([0, 1])
        )
    with pytest.raises(ValueError, match="dimension"):
        zeros = torch.zeros(3, dtype=torch.long)
        nearest_synthetic(torch.randn(3, 2), zeros, torch.randn(2, 5), zeros[:2])


# --- KMeansClusterer (per-class FAISS k-means) ---------------------------------------------


def two_mode_images(num_classes: int = 2, per_mode: int = 6) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 4, 4) of two clearly different brightness modes per class."""
    generator = torch.Generator().manual_seed(0)
    images, labels = [], []
    for label in range(num_classes):
        for mode in range(2):
            base = float(label * 10 + mode * 5)
            images.append(base + 0.01 * torch.randn(per_mode, 1, 4, 4, generator=generator))
            labels.append(torch.full((per_mode,), label))
    return torch.cat(images), torch.cat(labels)


def test_due_at_zero_and_every_n_iterations() -> None:
    clusterer = KMeansClusterer(every=5, features="pixels")
    assert [i for i in range(12) if clusterer.due(i)] == [0, 5, 10]
    assert KMeansClusterer(every=1, features="pixels").due(7)


def test_fit_on_pixels_stores_buffers_in_the_state_dict() -> None:
    images, labels = two_mode_images()
    clusterer = KMeansClusterer(k=2, features="pixels", pool_per_class=None, seed=0)
    assert clusterer.centroids.numel() == 0 and clusterer.assignments.numel() == 0
    groups = clusterer.fit(images, labels, num_classes=2)
    assert clusterer.num_groups(2) == 4
    assert clusterer.centroids.shape == (2, 2, 16)
    assert torch.equal(clusterer.assignments, groups)
    truth = torch.arange(4).repeat_interleave(6)
    assert same_partition(groups, truth)
    state = clusterer.state_dict()
    assert set(state) == {"centroids", "assignments", "merged_ids", "separation"}  # shape=auto
    # A fresh clusterer (empty buffers) loads a fitted one and assigns new images the same way.
    fresh = KMeansClusterer(k=2, features="pixels", pool_per_class=None, seed=0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.centroids, clusterer.centroids)
    assert torch.equal(fresh.assign(images, labels), groups)


def test_rare_vs_rest_keeps_each_class_smallest_cluster_and_merges_the_rest() -> None:
    """clustering.shape=rare_vs_rest: two groups per class, the smallest k-means cluster (2c) and
    the others (2c + 1), in the fit, in assign and after a state_dict round trip."""
    generator = torch.Generator().manual_seed(0)
    modes = {0: (6, 2, 6), 1: (6, 6, 2)}  # images per brightness mode, per class
    images, labels, rare = [], [], []
    for label, sizes in modes.items():
        for mode, n in enumerate(sizes):
            images.append(
                label * 30 + mode * 10 + 0.01 * torch.randn(n, 1, 4, 4, generator=generator)
            )
            labels.append(torch.full((n,), label))
            rare.append(torch.full((n,), n == 2))
    images, labels, rare = torch.cat(images), torch.cat(labels), torch.cat(rare)
    clusterer = KMeansClusterer(k=3, features="pixels", pool_per_class=None, shape="rare_vs_rest")
    groups = clusterer.fit(images, labels, num_classes=2)
    assert clusterer.num_groups(2) == 4
    assert torch.equal(groups, 2 * labels + (~rare).long())
    assert torch.equal(clusterer.assign(images, labels), groups)
    fresh = KMeansClusterer(k=3, features="pixels", pool_per_class=None, shape="rare_vs_rest")
    fresh.load_state_dict(clusterer.state_dict())
    assert torch.equal(fresh.assign(images, labels), groups)
    assert "merged_ids" not in KMeansClusterer(k=3, shape="clusters").state_dict()


def test_pool_takes_at_most_pool_per_class_images_per_class_reproducibly() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3)
    clusterer = KMeansClusterer(k=2, features="pixels", pool_per_class=4, seed=1)
    pool = clusterer.pool(labels, num_classes=2, iteration=50)
    assert torch.bincount(labels[pool]).tolist() == [4, 3]
    assert torch.equal(pool, clusterer.pool(labels, num_classes=2, iteration=50))


def test_pool_is_drawn_independently_of_the_altered_subgroup() -> None:
    """Both draw randperm class by class; with one seed the pool was the subgroup itself."""
    from rdd.data.subgroup import pick_members

    labels = torch.arange(4).repeat_interleave(200)
    altered = pick_members(labels, fraction=0.1, seed=0)
    pool = KMeansClusterer(k=2, features="pixels", pool_per_class=40, seed=0).pool(labels, 4)
    assert float(altered[pool].float().mean()) < 0.3  # 0.1 expected; 0.5 with the same draw


class StubNet(nn.Module):
    """embed() returns the image mean and its negation; records whether it ran in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.modes: list[bool] = []

    def embed(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, -mean], dim=1) * self.scale


def test_embedding_features_use_the_net_in_eval_mode_and_restore_its_mode() -> None:
    images, labels = two_mode_images()
    net = StubNet().train()
    clusterer = KMeansClusterer(k=2, features="embedding", pool_per_class=None)
    features = clusterer.features_of(images, net)
    assert features.shape == (24, 2) and not features.requires_grad
    assert net.training and net.modes and not any(net.modes)
    clusterer.fit(images, labels, num_classes=2, net=net)
    assert clusterer.centroids.shape == (2, 2, 2)
    with pytest.raises(ValueError, match="net="):
        clusterer.fit(images, labels, num_classes=2)


def test_embedding_features_of_a_convnet_match_embed_when_computed_in_batches() -> None:
    net = build_net(TINY_NET, 1, 2, (4, 4))
    images, _ = two_mode_images()
    features = embed_in_batches(net, images, batch_size=5)  # 24 images: 5 batches
    with torch.no_grad():
        assert torch.allclose(features, net.eval().embed(images), atol=1e-6)


def test_under_distributed_only_rank0_clusters_and_the_others_take_its_result(
    monkeypatch,
) -> None:
    import rdd.clustering.base as base  # the rank-0 broadcast lives here
    import rdd.clustering.kmeans_clusterer as module

    rank0_groups = torch.arange(24) % 4

    class FakeDist:  # rank 1 of 2; broadcast hands it rank 0's tensors
        is_available = staticmethod(lambda: True)
        is_initialized = staticmethod(lambda: True)
        get_world_size = staticmethod(lambda: 2)
        get_rank = staticmethod(lambda: 1)
        get_backend = staticmethod(lambda: "gloo")

        @staticmethod
        def broadcast(tensor: Tensor, src: int) -> None:
            assert src == 0
            tensor.copy_(rank0_groups if tensor.dtype == torch.int64 else torch.ones_like(tensor))

    def no_kmeans(*args, **kwargs):
        raise AssertionError("only rank 0 runs k-means")

    monkeypatch.setattr(base, "dist", FakeDist)
    monkeypatch.setattr(module, "per_class_kmeans", no_kmeans)
    images, labels = two_mode_images()
    clusterer = KMeansClusterer(k=2, features="pixels", pool_per_class=None)
    assert torch.equal(clusterer.fit(images, labels, 2), rank0_groups)
    assert torch.equal(clusterer.centroids, torch.ones(2, 2, 16))


def save_tiny_net(path: Path) -> nn.Module:
    net = build_net(TINY_NET, 1, 2, (4, 4))
    torch.save({"config": TINY_NET, "state_dict": net.state_dict()}, path)
    return net


def test_fixed_net_features_come_from_the_saved_file(tmp_path: Path) -> None:
    path = tmp_path / "features.pt"
    saved = save_tiny_net(path)
    images, labels = two_mode_images()
    clusterer = KMeansClusterer(
        k=2, features="fixed_net", feature_net=str(path), pool_per_class=None, shape="clusters"
    )
    groups = clusterer.fit(images, labels, num_classes=2)
    with torch.no_grad():
        expected = saved.eval().embed(images)
    assert torch.allclose(clusterer.features_of(images, num_classes=2), expected, atol=1e-6)
    assert groups.shape == (24,)
    assert set(clusterer.state_dict()) == {"centroids", "assignments"}  # the net is not saved


@pytest.mark.parametrize("problem", ["missing", "corrupt", "wrong_keys"])
def test_a_bad_feature_net_file_names_its_path(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "features.pt"
    if problem == "corrupt":
        path.write_bytes(b"not a torch file")
    elif problem == "wrong_keys":
        torch.save({"weights": torch.zeros(1)}, path)
    clusterer = KMeansClusterer(k=1, features="fixed_net", feature_net=str(path))
    images, labels = two_mode_images()
    with pytest.raises(ValueError, match=str(path)):
        clusterer.fit(images, labels, num_classes=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k"),
        ({"every": 0}, "every"),
        ({"niter": 0}, "niter"),
        ({"features": "logits"}, "features"),
        ({"features": "fixed_net"}, "feature_net"),
        ({"k": 5, "pool_per_class": 4}, "pool_per_class"),
        ({"k": 1, "shape": "rare_vs_rest"}, "rare_vs_rest"),
        ({"shape": "smallest"}, "clustering.shape"),
        ({"apart": 2.5}, "clustering.apart"),
    ],
)
def test_clusterer_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KMeansClusterer(**kwargs)


def test_fit_names_a_class_with_fewer_images_than_k() -> None:
    images, labels = two_mode_images()
    with pytest.raises(ValueError, match="class 1 has 6 points"):  # class 0 has 12
        KMeansClusterer(k=7, features="pixels", pool_per_class=None).fit(
            images[:18], labels[:18], 2
        )


def test_nearest_synthetic_clusterer_groups_around_the_synthetic_images() -> None:
    images, labels = two_mode_images()
    syn_images = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 5.0, 10.0, 15.0)])
    syn_labels = torch.tensor([0, 0, 1, 1])
    clusterer = NearestSyntheticClusterer(features="pixels", pool_per_class=None)
    assert clusterer.nearest and not hasattr(
        KMeansClusterer(), "nearest"
    )  # how rdd.distill.learner tells
    groups = clusterer.fit(images, labels, 2, syn_images=syn_images, syn_labels=syn_labels)
    assert groups.tolist() == torch.arange(4).repeat_interleave(6).tolist()
    assert clusterer.num_groups(2, ipc=2) == 4 == clusterer.num_groups(2)
    assert clusterer.centroids.shape == (4, 16)
    assert set(clusterer.state_dict()) == {"centroids", "assignments", "centroid_labels"}
    assert torch.equal(clusterer.assign(images, labels), groups)
    with pytest.raises(ValueError, match="syn_images"):
        clusterer.fit(images, labels, 2)
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        clusterer.fit(images, labels, 2, syn_images=syn_images[:2], syn_labels=syn_labels[:2])


@pytest.mark.parametrize("option", OPTIONS)
def test_every_clustering_config_composes_and_instantiates(option: str, tmp_path: Path) -> None:
    cfg = compose_config(f"clustering={option}", "seed=3", output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.clustering.name == option
    if "_target_" not in cfg.clustering:  # `none` builds nothing: one group per class
        return
    images, labels = two_mode_images()
    if option == "known":  # the data module's mask of the altered images
        altered = torch.arange(len(labels)) % 6 == 0
        clusterer = hydra.utils.instantiate(cfg.clustering, membership=altered)
        assert torch.equal(clusterer.assign(images, labels), 2 * labels + altered.long())
        return
    clusterer = hydra.utils.instantiate(cfg.clustering)
    assert isinstance(clusterer, nn.Module) and clusterer.name == option
    assert clusterer.seed == 3 and clusterer.due(0)
    extra = {"syn_images": images[::6], "syn_labels": labels[::6]}
    clusterer.fit(
        images, labels, 2, net=StubNet(), **(extra if option == "nearest_synthetic" else {})
    )
    assert clusterer.assignments.shape == (24,)


def test_a_misspelt_clustering_key_fails_at_compose_time(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_config("clustering=faiss_kmeans", "clustering.kk=2", output_dir=tmp_path)
