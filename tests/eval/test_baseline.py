"""The random real subset of baseline=random."""

from __future__ import annotations

import pytest
import torch

from rdd.config.errors import UserError
from rdd.eval.baseline import random_subset


def test_the_subset_has_the_images_per_class_and_is_seeded() -> None:
    y = torch.arange(3).repeat(10)
    x = torch.arange(30).float().view(30, 1, 1, 1)  # each image holds its own index
    per_class = torch.tensor([2, 0, 4])
    images, labels = random_subset(x, y, per_class, seed=1)
    assert torch.bincount(labels, minlength=3).tolist() == [2, 0, 4]
    index = images.flatten().long()
    assert torch.equal(y[index], labels) and len(set(index.tolist())) == 6  # no repeats
    again, _ = random_subset(x, y, per_class, seed=1)
    other, _ = random_subset(x, y, per_class, seed=2)
    assert torch.equal(images, again) and not torch.equal(images, other)
    with pytest.raises(UserError, match="needs 11 real images of class 0"):
        random_subset(x, y, torch.tensor([11, 0, 0]), seed=1)
