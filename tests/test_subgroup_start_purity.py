"""benchmarks/subgroup_shift/start_purity.py: the altered share of represented starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.test_subgroup_shape import toy_data

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "start_purity.py"
spec = importlib.util.spec_from_file_location("start_purity", SCRIPT)
start_purity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(start_purity)


def five_percent_grey():
    """Two classes of 200 colourful images, 10 of each (5 %) made grey: a group under 10 %
    of its class, so the size-based allocation gives it one image at IPC 10."""
    data = toy_data(grey=False)
    grey = (torch.arange(400) % 200) < 10
    mean = data.train_x.mean(dim=1, keepdim=True).expand_as(data.train_x)
    data.train_x = torch.where(grey.view(-1, 1, 1, 1), mean, data.train_x)
    data.train_subgroup = grey
    return data


def test_a_found_grey_group_starts_from_grey_images_at_every_share() -> None:
    represented, purity = start_purity.start_purity(five_percent_grey(), seed=0)
    assert represented == 2  # one per class
    assert purity == pytest.approx([1.0] * len(start_purity.SHARES))


def test_without_a_rare_group_nothing_is_represented() -> None:
    data = toy_data(grey=False)
    data.train_subgroup = torch.zeros(400, dtype=torch.bool)
    represented, purity = start_purity.start_purity(data, seed=0)
    assert represented == 0 and purity == [0.0] * len(start_purity.SHARES)
