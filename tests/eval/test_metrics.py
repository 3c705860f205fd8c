"""Per-class and per-group accuracy (rdd.eval.metrics) against a plain Python loop."""

from __future__ import annotations

import pytest
import torch

from rdd.eval.metrics import ClassAccuracy, GroupAccuracy, group_accuracy


def loop_accuracy(correct: list[bool], groups: list[int], ids: list[int]) -> list[float | None]:
    """Independent oracle: for every id, 100 * hits / members, or None for an empty group."""
    out: list[float | None] = []
    for g in ids:
        members = [c for c, k in zip(correct, groups, strict=True) if k == g]
        out.append(100.0 * sum(members) / len(members) if members else None)
    return out


def random_case(n: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Group ids drawn from {0, 2, 3, 5, 9}: 1, 4, 6, 7 and 8 are empty."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([0, 2, 3, 5, 9])
    groups = ids[torch.randint(len(ids), (n,), generator=gen)]
    correct = torch.rand(n, generator=gen) < torch.linspace(0.1, 0.9, 10)[groups]
    return correct, groups


def test_group_accuracy_equals_a_loop_and_skips_empty_groups() -> None:
    correct, groups = random_case()
    expected = [a for a in loop_accuracy(correct.tolist(), groups.tolist(), list(range(10))) if a]
    got = group_accuracy(correct, groups)
    assert got.dtype == torch.float32 and len(got) == 5  # non-empty groups, in id order
    assert got.tolist() == pytest.approx(expected, abs=1e-4)
    hand = group_accuracy(
        torch.tensor([True, False, True, True, False]), torch.tensor([0, 0, 1, 1, 3])
    )
    assert hand.tolist() == [50.0, 100.0, 0.0]
    assert (
        group_accuracy(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.long)).numel()
        == 0
    )


def test_batches_and_merged_states_equal_one_pass() -> None:
    """Two metrics fed the halves (two ranks) and merged by their sum reductions give the
    single-process result; so do batches fed to one metric."""
    correct, groups = random_case(seed=1)
    whole = group_accuracy(correct, groups)
    batched = GroupAccuracy(10)
    for c, g in zip(correct.split(64), groups.split(64), strict=True):
        batched.update(c, g)
    assert torch.equal(batched.compute(), whole)
    rank0, rank1 = GroupAccuracy(10), GroupAccuracy(10)
    rank0.update(correct[:137], groups[:137])
    rank1.update(correct[137:], groups[137:])
    rank0.merge_state(rank1)
    assert torch.equal(
        rank0.hits, torch.bincount(groups, weights=correct.long(), minlength=10).long()
    )
    assert torch.equal(rank0.compute(), whole)
    # The reduction is a sum of hits and counts, not a mean of the ranks' accuracies.
    means = (GroupAccuracy(10), GroupAccuracy(10))
    means[0].update(correct[:137], groups[:137])
    means[1].update(correct[137:], groups[137:])
    assert not torch.allclose((means[0].compute() + means[1].compute()) / 2, whole)


def test_class_accuracy_equals_a_loop_with_an_absent_class() -> None:
    gen = torch.Generator().manual_seed(2)
    target = torch.randint(4, (300,), generator=gen)  # class 4 of 5 never occurs
    pred = torch.where(
        torch.rand(300, generator=gen) < 0.6, target, torch.randint(5, (300,), generator=gen)
    )
    correct = (pred == target).tolist()
    expected = [a or 0.0 for a in loop_accuracy(correct, target.tolist(), list(range(5)))]
    metric = ClassAccuracy(5)
    for p, t in zip(pred.split(100), target.split(100), strict=True):
        metric.update(p, t)
    overall, per_class = metric.percent()
    assert overall == pytest.approx(100.0 * sum(correct) / 300, abs=1e-4)
    assert per_class.tolist() == pytest.approx(expected, abs=1e-4) and per_class[4] == 0.0
    other = ClassAccuracy(5)
    other.update(pred[:50], target[:50])
    rest = ClassAccuracy(5)
    rest.update(pred[50:], target[50:])
    other.merge_state(rest)  # before compute(): torchmetrics caches a computed value
    assert other.percent()[0] == pytest.approx(overall) and torch.equal(
        other.percent()[1], per_class
    )
    metric.reset()
    metric.update(target, target)
    assert metric.percent()[0] == 100.0


@pytest.mark.parametrize(
    ("correct", "groups", "words"),
    [
        (torch.ones(3, dtype=torch.bool), torch.zeros(4, dtype=torch.long), "not of this test set"),
        (torch.ones(2, dtype=torch.bool), torch.tensor([0, -1]), ">= 0"),
        (torch.ones(2, dtype=torch.bool), torch.tensor([0.0, 1.0]), "integers"),
    ],
)
def test_group_accuracy_rejects_bad_input(correct, groups, words) -> None:
    with pytest.raises(ValueError, match=words):
        group_accuracy(correct, groups)


def test_group_metric_rejects_ids_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        GroupAccuracy(3).update(torch.ones(2, dtype=torch.bool), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="num_groups >= 1"):
        GroupAccuracy(0)
