"""The random-subset baseline (DD-Ranking's "gain over random"): real training images drawn
at random with the synthetic set's images per class, trained on by the same networks."""

from __future__ import annotations

from typing import Any

import torch

from rdd.config.errors import UserError
from rdd.utils.seeds import derived_seed

BASELINES = (None, "random")


def check_baseline(name: Any) -> str | None:
    if name not in BASELINES:
        raise UserError(f"unknown baseline '{name}': use baseline=random or leave it unset")
    return name


def random_subset(
    train_x: torch.Tensor, train_y: torch.Tensor, per_class: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class[c]`` training images of every class c, drawn without replacement.

    Args:
        train_x: (N, C, H, W) the real training images (model input space); train_y: (N,).
        per_class: (K,) int64 images to draw per class.
        seed: seeds the draw (a generator of its own: the same seed gives the same subset).

    Returns:
        images (M, C, H, W) and labels (M,), M = per_class.sum(), grouped by class.
    """
    gen = torch.Generator().manual_seed(derived_seed(seed, "random_subset"))
    picked = []
    for c, n in enumerate(per_class.tolist()):
        pool = (train_y == c).nonzero().flatten()
        if n > len(pool):
            raise UserError(
                f"baseline=random needs {n} real images of class {c} but the training split "
                f"has {len(pool)}: drop baseline=random or lower data.val_fraction"
            )
        picked.append(pool[torch.randperm(len(pool), generator=gen)[:n]])
    index = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)
    return train_x[index], train_y[index]
