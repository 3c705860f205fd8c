"""Tests for rdd.clustering.discovery: purity and recall of the rare group, by hand."""

from __future__ import annotations

import pytest
import torch

from rdd.clustering import rare_group_discovery

# Two classes, k = 2. Class 0: group 1 holds 2 of its 3 altered images and 3 images in all;
# class 1: group 2 holds its only altered image, among 2 images.
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
LABELS = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
ALTERED = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)


def test_purity_and_recall_of_a_hand_made_assignment() -> None:
    result = rare_group_discovery(GROUPS, LABELS, ALTERED, groups_per_class=2, num_classes=2)
    assert set(result) == {"cluster/rare_purity", "cluster/rare_recall"}
    assert result["cluster/rare_purity"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result["cluster/rare_recall"] == pytest.approx((2 / 3 + 1) / 2)


def test_the_order_of_the_images_does_not_matter() -> None:
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    shuffled = rare_group_discovery(GROUPS[order], LABELS[order], ALTERED[order], 2, 2)
    assert shuffled == pytest.approx(rare_group_discovery(GROUPS, LABELS, ALTERED, 2, 2))


def test_a_class_without_altered_images_is_left_out_of_the_means() -> None:
    groups = torch.cat([GROUPS, torch.tensor([4, 5, 5])])
    labels = torch.cat([LABELS, torch.tensor([2, 2, 2])])
    altered = torch.cat([ALTERED, torch.zeros(3, dtype=torch.bool)])
    with_empty = rare_group_discovery(groups, labels, altered, 2, 3)
    assert with_empty == pytest.approx(rare_group_discovery(GROUPS, LABELS, ALTERED, 2, 2))


def test_a_perfect_split_scores_one_and_a_tie_goes_to_the_lowest_group() -> None:
    labels = torch.zeros(6, dtype=torch.long)
    altered = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    perfect = rare_group_discovery(torch.tensor([2, 2, 0, 0, 1, 1]), labels, altered, 3, 1)
    assert perfect == {"cluster/rare_purity": 1.0, "cluster/rare_recall": 1.0}
    # One altered image in group 0 (with 2 others), one in group 1 (alone): group 0 wins.
    tie = rare_group_discovery(torch.tensor([0, 1, 0, 0, 2, 2]), labels, altered, 3, 1)
    assert tie == pytest.approx({"cluster/rare_purity": 1 / 3, "cluster/rare_recall": 1 / 2})


@pytest.mark.parametrize(
    ("groups", "altered", "match"),
    [
        (GROUPS + 2, ALTERED, "own class"),  # class 1's images in groups 4 and 5
        (GROUPS, torch.zeros(10, dtype=torch.bool), "no image is altered"),
        (GROUPS, ALTERED.long(), "bool"),
        (GROUPS[:9], ALTERED, "one length"),
    ],
)
def test_bad_inputs_are_refused(groups, altered, match) -> None:
    with pytest.raises(ValueError, match=match):
        rare_group_discovery(groups, LABELS, altered, groups_per_class=2, num_classes=2)
