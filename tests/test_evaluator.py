"""The evaluator trains networks by the protocol and learns an easy dataset."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from rdd.evaluator import EpochBatchSampler, evaluate_synset, group_accuracy
from rdd.nets import build_net
from rdd.partition import partition_test_set


class EasyData:
    """Ten classes, each a fixed random 8x8 pattern plus a little noise: easy to learn."""

    def __init__(self, per_class: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.num_classes, self.channel, self.im_size = 10, 1, (8, 8)
        self.patterns = torch.randn(10, 1, 8, 8, generator=gen)
        self.train = self.sample(per_class, gen)
        self.val, self.test = self.sample(10, gen), self.sample(30, gen)

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
