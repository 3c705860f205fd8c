"""Scoring a synthetic set: train the protocol's networks (rdd.eval.trained), report accuracy.

The last iterate of every network is scored on the held-out validation split and on the test
set (clean, its subgroups, the shifted and corrupted copies): nothing is ever selected on the
test set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from statistics import mean
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rdd.eval.shifted_sets import shift_jobs
from rdd.eval.stacked import TrainedNets
from rdd.eval.trained import train_all


class Evaluation(dict):
    """The metrics (name -> float, as written to metrics.json) with per-network details.

    ``details[arch]`` holds lists with one entry per network: ``cluster_acc`` (accuracy of
    every test subgroup) and ``class_acc`` (of every class), in percent.
    """

    def __init__(self, metrics: dict[str, float], details: dict[str, dict[str, list]]) -> None:
        super().__init__(metrics)
        self.details = details


def evaluate_synset(
    images: torch.Tensor,
    labels: torch.Tensor,
    data: Any,
    nets: dict[str, Callable[[], nn.Module]],
    eval_cfg: Any,
    trainer_kwargs: dict[str, Any],
    seed: int,
    test_groups: torch.Tensor | None = None,
    shifted: Callable[[], Iterable[tuple[str, torch.Tensor]]] | None = None,
    known_group: Callable[[], tuple[str, torch.Tensor] | None] | None = None,
    on_update: Callable[[Evaluation, bool], None] | None = None,
) -> Evaluation:
    """Train ``eval_cfg.num_nets`` networks of every architecture in ``nets`` on the set.

    Args:
        images, labels: the synthetic (or coreset) training set.
        data: a set-up RealDataModule (its validation and test loaders are used).
        nets: architecture name -> factory of a fresh network; the first is the headline one.
        eval_cfg: the `eval` config; trainer_kwargs: Lightning Trainer settings (one device).
        seed: the run's seed; network i of architecture a is seeded from (seed, a, i), so two
            sets evaluated with the same seed meet the same networks.
        test_groups: (N_test,) subgroup id of every test image (the cached test partition);
            adds ``mean_cluster_acc`` and ``worst_cluster_acc``.
        shifted: yields ``(name, test images)`` for shifted copies of the test set (same labels,
            same order); each adds ``<name>_acc``, and corruptions their mean ``corruption_acc``.
        known_group: returns ``(transform, fully altered test images)`` of the known rare
            subgroup (same labels, same order), or None; adds ``group_<transform>_acc``,
            ``group_clean_acc`` (= ``test_acc``) and ``worst_group_acc``, the lower of the two.
        on_update: called with ``(metrics so far, complete)`` after every network's clean
            figures (after all of an architecture's when they train stacked,
            ``eval.batched_nets``), after every shifted set and at the end, so that a caller can write them
            as they arrive (an interrupted evaluation keeps what it computed).

    Returns:
        Per architecture ``<arch>/test_acc``, ``_std``, ``<arch>/val_acc``,
        ``<arch>/worst_class_acc``, ... (percent, mean and std over networks), and the headline
        architecture's figures without the prefix; per-network details in ``.details``.
    """
    results: dict[str, dict[str, list]] = {arch: {} for arch in nets}

    def report(complete: bool) -> None:
        if on_update is not None:
            on_update(summarise(results), complete)

    trained: list[tuple[str, TrainedNets]] = []
    jobs = len(nets) * eval_cfg.num_nets
    with tqdm(total=jobs, desc="training + clean test", unit="net", dynamic_ncols=True) as bar:
        for arch, group, figures in train_all(
            nets, images, labels, data, eval_cfg, trainer_kwargs, seed, test_groups
        ):
            trained.append((arch, group))
            for one in figures:
                add_figures(results[arch], one)
            bar.update(group.num_nets)
            report(complete=False)
    if shifted is not None:
        sets = len(shift_jobs(eval_cfg)) * len(nets) * eval_cfg.num_nets
        with tqdm(total=sets, desc="shifted test sets", unit="set", dynamic_ncols=True) as bar:
            score_shifted(trained, shifted(), data.test_y, results, bar, report)
    group = known_group() if known_group is not None else None
    if group is not None:
        score_known_group(trained, *group, data.test_y, results)
    final = summarise(results)
    if on_update is not None:
        on_update(final, True)
    return final


def add_figures(results: dict[str, list], figures: dict[str, Any]) -> None:
    """Append one network's figures to its architecture's lists."""
    for key, value in figures.items():
        results.setdefault(key, []).append(value)


def score_shifted(
    trained: list[tuple[str, TrainedNets]],
    shifted: Iterable[tuple[str, torch.Tensor]],
    test_y: torch.Tensor,
    results: dict[str, dict[str, list]],
    bar: tqdm | None = None,
    report: Callable[[bool], None] | None = None,
) -> None:
    """Score every trained network on each shifted test set (built once, used by all nets),
    advancing ``bar`` per network and calling ``report(False)`` after every set."""
    corruptions: list[str] = []
    for name, x in shifted:
        if bar is not None:
            bar.set_postfix_str(name, refresh=False)
        for arch, group in trained:
            results[arch].setdefault(f"{name}_acc", []).extend(accuracy_on(group, x, test_y))
            if bar is not None:
                bar.update(group.num_nets)
        if name.startswith("corruption_"):
            corruptions.append(f"{name}_acc")
        if report is not None:
            report(False)
    for figures in results.values() if corruptions else ():
        per_net = zip(*(figures[key] for key in corruptions), strict=True)
        figures["corruption_acc"] = [mean(accs) for accs in per_net]


def score_known_group(
    trained: list[tuple[str, TrainedNets]],
    name: str,
    x: torch.Tensor,
    test_y: torch.Tensor,
    results: dict[str, dict[str, list]],
) -> None:
    """Score every trained network on the fully altered test set x (N, C, H, W); the clean
    test set is the other known group, and each network's worst group is the lower of the two
    (so worst_group_acc is a mean of per-network minima, like worst_cluster_acc)."""
    for arch, group in trained:
        figures = results[arch]
        altered = figures.setdefault(f"group_{name}_acc", [])
        for acc in accuracy_on(group, x, test_y):
            clean = figures["test_acc"][len(altered)]  # trained is in training order per arch
            altered.append(acc)
            figures.setdefault("group_clean_acc", []).append(clean)
            figures.setdefault("worst_group_acc", []).append(min(clean, acc))


def accuracy_on(nets: TrainedNets, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy in percent of each trained network on images (N, C, H, W) with labels (N,)."""
    hits = (nets.predict(x) == y.cpu()).sum(1).tolist()
    return [100.0 * h / max(len(y), 1) for h in hits]


def summarise(results: dict[str, dict[str, list]]) -> Evaluation:
    """Mean and std over networks of every scalar figure; list-valued ones go to details."""
    metrics: dict[str, float] = {}
    details: dict[str, dict[str, list]] = {}
    for arch, figures in results.items():
        for key, values in figures.items():
            if isinstance(values[0], list):
                details.setdefault(arch, {})[key] = values
                continue
            t = torch.tensor(values, dtype=torch.float64)
            metrics[f"{arch}/{key}"] = float(t.mean())
            metrics[f"{arch}/{key}_std"] = float(t.std(unbiased=False))
    headline = next(iter(results))
    for key in list(metrics):
        arch, _, name = key.partition("/")
        if arch == headline:
            metrics[name] = metrics[key]
    return Evaluation(metrics, details)
