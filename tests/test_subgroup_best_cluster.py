"""benchmarks/subgroup_shift/best_cluster.py: the best pick's altered start and the outcomes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.test_subgroup_shape import toy_data
from tests.test_subgroup_start_purity import five_percent_grey

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "subgroup_shift" / "best_cluster.py"
spec = importlib.util.spec_from_file_location("best_cluster", SCRIPT)
best_cluster = importlib.util.module_from_spec(spec)
spec.loader.exec_module(best_cluster)


def table(rows: list[tuple[float, float, float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_a_separated_grey_group_is_found_and_gives_a_grey_start_under_every_bound() -> None:
    """10 grey images of 200 per class (5 %): a cluster of their own, all of it grey."""
    starts, counts = best_cluster.summary(best_cluster.cluster_table(five_percent_grey(), 0))
    assert starts == pytest.approx([1.0] * len(best_cluster.BOUNDS))
    assert counts == {"found": 2, "partly": 0, "unseparated": 0}


def test_the_tables_count_every_image_once() -> None:
    data = five_percent_grey()
    for t in best_cluster.cluster_table(data, 0):
        assert float(t[:, 0].sum()) == pytest.approx(1.0)
        assert float(t[:, 2].sum()) == pytest.approx(1.0)  # every grey image in some cluster


def test_without_altered_images_no_cluster_is_found() -> None:
    data = toy_data(grey=False)
    data.train_subgroup = torch.zeros(400, dtype=torch.bool)
    starts, counts = best_cluster.summary(best_cluster.cluster_table(data, 0))
    assert starts == [0.0] * len(best_cluster.BOUNDS)
    assert counts["unseparated"] == 2


def test_the_bound_decides_which_clusters_a_pick_may_choose() -> None:
    """Shares 0.12 (60 % altered) and 0.05 (30 %): under 1 only the small one may represent
    (IPC 10: 1.2 images' worth is not rare), under 1.5 and without a bound the purer one."""
    t = table([(0.12, 0.6, 0.9), (0.05, 0.3, 0.1), (0.83, 0.0, 0.0)])
    assert [best_cluster.best_start(t, b) for b in best_cluster.BOUNDS] == [0.3, 0.6, 0.6]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([(0.06, 0.8, 0.95), (0.94, 0.003, 0.05)], "found"),
        ([(0.03, 0.9, 0.55), (0.03, 0.7, 0.42), (0.94, 0.002, 0.03)], "partly"),
        ([(0.2, 0.2, 0.8), (0.8, 0.012, 0.2)], "unseparated"),
    ],
)
def test_outcomes_on_hand_made_tables(rows, expected) -> None:
    assert best_cluster.outcome(table(rows)) == expected
