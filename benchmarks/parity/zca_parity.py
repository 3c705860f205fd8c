"""Parity of rdd's ZCA whitening (data.zca=true) with kornia's ZCAWhitening, as MTT uses it.

MTT (GeorgeCazenavette/mtt-distillation) fits ``kornia.enhance.ZCAWhitening(eps=0.1,
compute_inv=True)`` on ``ToTensor()`` images of the training split and whitens every split
with it. Both are run here on the same images -- the digits training split as rdd's data
module reads it (16x16, raw [0, 1] pixels) -- and the whitened test images are compared.
Prints the max relative difference; ``--record`` writes kornia's output to the fixture that
``tests/data/test_zca.py`` checks rdd against on every ``make test``.

rdd now fits with kornia's ``zca_mean`` itself (kornia is a dependency), so this checks that
rdd's data module feeds kornia what MTT feeds it and applies the fit as kornia's module does.

Usage:

    .venv/bin/python benchmarks/parity/zca_parity.py [--record]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = common.REPO
sys.path.insert(0, str(REPO / "src"))

from rdd.data import RealDataModule  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "parity_zca.pt"
SCORED = 64  # test images whose whitened values are recorded


def raw_digits() -> RealDataModule:
    """The digits splits as ToTensor() gives them (mean 0, std 1: no normalisation)."""
    data = RealDataModule(name="digits", image_size=16, mean=[0.0], std=[1.0])
    data.setup()
    return data


def rdd_whitened(cache_dir: str | None = None) -> torch.Tensor:
    data = RealDataModule(name="digits", image_size=16, zca=True, cache_dir=cache_dir)
    data.setup()
    return data.test_x[:SCORED]


def kornia_whitened() -> torch.Tensor:
    from kornia.enhance import ZCAWhitening

    raw = raw_digits()
    zca = ZCAWhitening(eps=0.1, compute_inv=True)  # MTT's buffer.py / distill.py settings
    zca.fit(raw.train_x)
    return zca(raw.test_x[:SCORED]).detach()


def reference_figures() -> dict[str, torch.Tensor]:
    return {"whitened": kornia_whitened()}


def rdd_figures() -> dict[str, torch.Tensor]:
    return {"whitened": rdd_whitened()}


if __name__ == "__main__":
    common.main(__doc__, FIXTURE, None, reference_figures, rdd_figures)
