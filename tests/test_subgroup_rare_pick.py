"""benchmarks/subgroup_shift/rare_pick.py: represented images and their altered starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.test_subgroup_shape import toy_data
from tests.test_subgroup_start_purity import five_percent_grey

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "rare_pick.py"
spec = importlib.util.spec_from_file_location("rare_pick", SCRIPT)
rare_pick = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rare_pick)


@pytest.mark.parametrize("pick", rare_pick.PICKS)
def test_a_found_grey_group_gives_every_class_one_grey_start(pick) -> None:
    """A 5 % grey group per class, found by either rule: one represented image per class,
    all of it grey, under either bound."""
    for represented, altered in rare_pick.coverage(five_percent_grey(), seed=0, pick=pick):
        assert represented == pytest.approx(1.0)
        assert altered == pytest.approx(1.0)


def test_a_grey_group_of_twelve_percent_is_covered_only_under_the_wider_bound() -> None:
    """24 of 200 images per class grey (12 %): the shared images give the group 1.2 images'
    worth at IPC 10, so under rare_below 1 it represents nothing, under 1.5 it does."""
    data = toy_data(grey=False)
    grey = (torch.arange(400) % 200) < 24
    mean = data.train_x.mean(dim=1, keepdim=True).expand_as(data.train_x)
    data.train_x = torch.where(grey.view(-1, 1, 1, 1), mean, data.train_x)
    data.train_subgroup = grey
    (narrow, _), (wide, altered) = rare_pick.coverage(data, seed=0, pick="smallest")
    assert narrow == 0.0
    assert wide >= 1.0 and altered == pytest.approx(wide)
