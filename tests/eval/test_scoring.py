"""The evaluator trains networks by the protocol and learns an easy dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rdd.config.errors import UserError
from rdd.eval.metrics import group_accuracy
from rdd.eval.partition import partition_test_set
from rdd.eval.scoring import evaluate_synset
from rdd.eval.training import EpochBatchSampler
from rdd.nets import build_net
from rdd.utils.seeds import derived_seed


class EasyData:
    """Ten classes, each a fixed random 8x8 pattern plus a little noise: easy to learn."""

    def __init__(self, per_class: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.num_classes, self.channel, self.im_size = 10, 1, (8, 8)
        self.patterns = torch.randn(10, 1, 8, 8, generator=gen)
        self.train = self.sample(per_class, gen)
        self.val, self.test = self.sample(10, gen), self.sample(30, gen)
        self.test_y = self.test[1]

    def sample(self, n: int, gen: torch.Generator):
        y = torch.arange(10).repeat_interleave(n)
        return self.patterns[y] + 0.3 * torch.randn(len(y), 1, 8, 8, generator=gen), y

    def loader(self, split):
        x, y = split
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=128)

    def val_dataloader(self):
        return self.loader(self.val)

    def test_dataloader(self):
        return self.loader(self.test)


EVAL = OmegaConf.create(
    {
        "num_nets": 2,
        "epochs": 40,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 256,
        "lr_decay_at": 0.5,
        "dsa": False,
        "dsa_strategy": "color_crop_cutout_scale_rotate",
    }
)
CPU = {"accelerator": "cpu", "devices": 1}


def mlp_factory():
    return lambda: build_net({"_target_": "rdd.nets.mlp.MLP"}, 1, 10, (8, 8))


def test_learns_an_easy_dataset_to_high_accuracy() -> None:
    data = EasyData(per_class=5)
    metrics = evaluate_synset(*data.train, data, {"mlp": mlp_factory()}, EVAL, CPU, seed=0)
    assert metrics["test_acc"] > 95 and metrics["val_acc"] > 95
    assert metrics["mlp/test_acc"] == metrics["test_acc"]
    assert 0 <= metrics["test_acc_std"] < 5
    assert metrics["worst_class_acc"] <= metrics["test_acc"]


def test_random_labels_stay_near_chance() -> None:
    data = EasyData(per_class=5)
    x, y = data.train
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    metrics = evaluate_synset(x, shuffled, data, {"mlp": mlp_factory()}, EVAL, CPU, seed=0)
    assert metrics["test_acc"] < 50


def test_same_seed_same_result_and_dsa_runs() -> None:
    data = EasyData(per_class=3)
    settings = OmegaConf.merge(EVAL, {"num_nets": 1, "epochs": 5, "dsa": True})
    convnet = {
        "convnet": lambda: build_net(
            {"_target_": "rdd.nets.convnet.ConvNet", "width": 8}, 1, 10, (8, 8)
        )
    }
    first = evaluate_synset(*data.train, data, convnet, settings, CPU, seed=3)
    second = evaluate_synset(*data.train, data, convnet, settings, CPU, seed=3)
    assert first["test_acc"] == second["test_acc"]


def test_epoch_sampler_covers_every_image_once_per_epoch() -> None:
    sampler = EpochBatchSampler(10, 4, 3, torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler) == 9
    for epoch in range(3):
        assert sorted(torch.cat(batches[3 * epoch : 3 * epoch + 3]).tolist()) == list(range(10))


def test_group_accuracy_on_a_hand_example() -> None:
    correct = torch.tensor([True, False, True, True, False, False])
    groups = torch.tensor([0, 0, 1, 1, 3, 3])  # group 2 is empty and is skipped
    assert group_accuracy(correct, groups).tolist() == [50.0, 100.0, 0.0]


def test_cluster_metrics_are_reported() -> None:
    data = EasyData(per_class=5)
    # Partition by class parity: a perfect classifier gets 100 on both clusters.
    groups = data.test[1] % 2
    metrics = evaluate_synset(
        *data.train, data, {"mlp": mlp_factory()}, EVAL, CPU, seed=0, test_groups=groups
    )
    assert metrics["worst_cluster_acc"] <= metrics["mean_cluster_acc"] <= 100
    assert (
        metrics["worst_class_acc"] <= metrics["worst_cluster_acc"] + 1e-9
    )  # clusters here are unions of classes


def test_the_test_partition_is_cached_identical_and_rebuilt_when_settings_change(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    test_x = torch.cat([torch.randn(30, 1, 4, 4, generator=gen) + 6 * i for i in range(3)])
    first = partition_test_set(test_x, k=3, seed=0, cache_dir=str(tmp_path))
    files = list(tmp_path.glob("test-partition-*.pt"))
    assert len(files) == 1
    assert torch.equal(first, partition_test_set(test_x, k=3, seed=0, cache_dir=str(tmp_path)))
    # three well-separated blobs: each blob is one cluster
    assert all(len(first[i * 30 : (i + 1) * 30].unique()) == 1 for i in range(3))
    partition_test_set(test_x, k=2, seed=0, cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("test-partition-*.pt"))) == 2
    files[0].write_bytes(b"garbage")  # a damaged cache is rebuilt, not fatal
    assert torch.equal(first, partition_test_set(test_x, k=3, seed=0, cache_dir=str(tmp_path)))


# -- subgroup, class and shift metrics against a hand computation -----------------------------


def frozen_eval(num_nets: int = 2):
    """lr 0, no momentum or weight decay, no augmentation: every network keeps its seeded
    initial weights, so its predictions can be recomputed independently."""
    return OmegaConf.merge(
        EVAL, {"num_nets": num_nets, "epochs": 1, "lr": 0.0, "momentum": 0.0, "weight_decay": 0.0}
    )


def initial_predictions(x: torch.Tensor, seed: int, arch: str, i: int) -> np.ndarray:
    """The predictions of network i of ``arch`` as the evaluator initialises it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(derived_seed(seed, arch, i), "init"))
        net = mlp_factory()()
    with torch.no_grad():
        return net(x).argmax(1).numpy()


def hand_group_accuracy(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> list[float]:
    return [100.0 * float(np.mean(pred[groups == g] == y[groups == g])) for g in np.unique(groups)]


def test_worst_cluster_class_and_shift_accuracy_equal_a_hand_computation() -> None:
    data = EasyData(per_class=2)
    test_x, test_y = data.test
    groups = torch.arange(len(test_y)) % 7  # clusters that cut across classes
    flipped = -test_x

    def shifted():
        yield "invert", flipped
        yield "corruption_zero_s1", torch.zeros_like(test_x)
        yield "corruption_same_s2", test_x

    metrics = evaluate_synset(
        *data.train, data, {"mlp": mlp_factory()}, frozen_eval(), CPU, 5, groups, shifted
    )
    y, g = test_y.numpy(), groups.numpy()
    figures: dict[str, list[float]] = {}
    for i in range(2):
        pred = initial_predictions(test_x, 5, "mlp", i)
        clusters = hand_group_accuracy(pred, y, g)
        classes = hand_group_accuracy(pred, y, y)
        zero = 100.0 * float(
            np.mean(initial_predictions(torch.zeros_like(test_x), 5, "mlp", i) == y)
        )
        same = 100.0 * float(np.mean(pred == y))
        for key, value in {
            "test_acc": same,
            "worst_cluster_acc": min(clusters),
            "mean_cluster_acc": float(np.mean(clusters)),
            "worst_class_acc": min(classes),
            "invert_acc": 100.0 * float(np.mean(initial_predictions(flipped, 5, "mlp", i) == y)),
            "corruption_acc": (zero + same) / 2,
        }.items():
            figures.setdefault(key, []).append(value)
        assert metrics.details["mlp"]["cluster_acc"][i] == pytest.approx(clusters, abs=1e-4)
        assert metrics.details["mlp"]["class_acc"][i] == pytest.approx(classes, abs=1e-4)
    for key, values in figures.items():
        assert metrics[key] == pytest.approx(np.mean(values), abs=1e-4), key
        assert metrics[f"{key}_std"] == pytest.approx(np.std(values), abs=1e-4), key
    assert metrics["corruption_same_s2_acc"] == pytest.approx(metrics["test_acc"], abs=1e-4)


def test_the_partition_in_a_fixed_networks_feature_space_is_cached_and_keyed_by_the_net(
    tmp_path,
) -> None:
    gen = torch.Generator().manual_seed(0)
    test_x = (torch.rand(60, 1, 8, 8, generator=gen) * 255).to(torch.uint8)

    def net(width: int):
        return lambda: build_net({"_target_": "rdd.nets.mlp.MLP", "width": width}, 1, 10, (8, 8))

    first = partition_test_set(test_x, 4, 0, "net", str(tmp_path), net(16), "mlp16")
    again = partition_test_set(test_x, 4, 0, "net", str(tmp_path), net(16), "mlp16")
    assert torch.equal(first, again) and len(list(tmp_path.glob("test-partition-*.pt"))) == 1
    # Without the cache the same fixed network gives the same groups (it is seeded).
    assert torch.equal(first, partition_test_set(test_x, 4, 0, "net", None, net(16), "mlp16"))
    partition_test_set(test_x, 4, 0, "net", str(tmp_path), net(32), "mlp32")
    partition_test_set(test_x, 4, 0, "pixels", str(tmp_path))
    assert len(list(tmp_path.glob("test-partition-*.pt"))) == 3
    with pytest.raises(UserError, match="choose one of pixels, net"):
        partition_test_set(test_x, 4, 0, "clip", str(tmp_path))
