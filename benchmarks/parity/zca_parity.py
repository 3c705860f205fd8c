"""Parity of rdd's ZCA whitening (data.zca=true) with kornia's ZCAWhitening, as MTT uses it.

MTT (GeorgeCazenavette/mtt-distillation) fits ``kornia.enhance.ZCAWhitening(eps=0.1,
compute_inv=True)`` on ``ToTensor()`` images of the training split and whitens every split
with it. Both are run here on the same images -- the digits training split as rdd's data
module reads it (16x16, raw [0, 1] pixels) -- and the whitened test images are compared.
Prints the max relative difference; ``--record`` writes kornia's output to the fixture that
``tests/test_zca.py`` checks rdd against on every ``make test``.

Usage (kornia installed anywhere on PYTHONPATH; it is not one of rdd's dependencies):

    pip install --target /tmp/kornia --no-deps kornia kornia_rs
    PYTHONPATH=/tmp/kornia .venv/bin/python benchmarks/parity/zca_parity.py [--record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {FIXTURE.name}")
    args = parser.parse_args()
    theirs, ours = kornia_whitened(), rdd_whitened()
    diff = float((ours - theirs).abs().max() / theirs.abs().max())
    print(f"whitened test images: max relative difference {diff:.2e}")
    if args.record:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        command = "PYTHONPATH=<kornia> benchmarks/parity/zca_parity.py --record"
        torch.save({"command": command, "whitened": theirs}, FIXTURE)
        print(f"recorded {FIXTURE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
