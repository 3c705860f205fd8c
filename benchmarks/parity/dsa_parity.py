"""Parity of rdd's DSA ops with the reference's (VICO-UoE/DatasetCondensation utils.py).

For every op (color, crop, cutout, flip, scale, rotate) the reference's own ``rand_*``
functions augment a seeded batch in siamese mode with a known seed; the parameters they draw
are re-drawn here from the same seeds (the reference seeds the global generator with
``latestseed`` and counts it up at every draw), converted to rdd's conventions and applied with
rdd's ``DSATransform``. Prints the max relative difference per op; ``--record`` writes the
reference's outputs and the parameters to the fixture that ``tests/augment/test_dsa.py``
checks rdd against.

The reference pins torch 1.2 (where ``affine_grid``/``grid_sample`` behaved as
``align_corners=True``) and runs unpatched on current PyTorch (``align_corners=False``); for
its centred scale and rotation the two settings give the same sampling up to rounding
(measured here: 9.8e-7 / 2.2e-6 with the default, 0 / 1.9e-6 with ``align_corners=True``, which
rdd uses), so the reference is run as it is.

    git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/vico
    .venv/bin/python benchmarks/parity/dsa_parity.py /tmp/vico [--record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from rdd.augment.dsa import DSATransform  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "parity_dsa.pt"
N, SIZE, SEED = 3, 16, 100
OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def batch() -> torch.Tensor:
    return torch.randn(N, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def drawn(seed: int, draw):
    """What the reference draws after ``torch.random.manual_seed(seed)`` (siamese: the first)."""
    torch.manual_seed(seed)
    return draw()


def reference_params(op: str) -> dict[str, torch.Tensor]:
    """The reference's siamese parameters for ``op`` from SEED, in rdd's names and signs."""
    s, r = SEED, lambda: torch.rand(N)
    if op == "color":  # rand_brightness, rand_saturation, rand_contrast: one seed each
        return {
            "brightness": (drawn(s, r)[:1] - 0.5) * 1.0,
            "saturation": drawn(s + 1, r)[:1] * 2.0,
            "contrast": drawn(s + 2, r)[:1] + 0.5,
        }
    if op == "crop":  # its translation_x runs along rows and moves the content up
        shift = int(SIZE * 0.125 + 0.5)
        ty = drawn(s, lambda: torch.randint(-shift, shift + 1, (N,)))[:1]
        tx = drawn(s + 1, lambda: torch.randint(-shift, shift + 1, (N,)))[:1]
        return {"crop_dy": -ty, "crop_dx": -tx}
    if op == "cutout":
        side = int(SIZE * 0.5 + 0.5)
        centre = lambda: torch.randint(0, SIZE + (1 - side % 2), (N,))  # noqa: E731
        y, x = drawn(s, centre)[:1] - side // 2, drawn(s + 1, centre)[:1] - side // 2
        return {
            "cutout_y0": y.clamp(0, SIZE),
            "cutout_y1": (y + side).clamp(0, SIZE),
            "cutout_x0": x.clamp(0, SIZE),
            "cutout_x1": (x + side).clamp(0, SIZE),
        }
    if op == "flip":
        return {"flip": drawn(s, r)[:1] < 0.5}
    if op == "scale":  # sx (width) is drawn before sy
        lo, hi = 1 / 1.2, 1.2
        return {
            "scale_x": drawn(s, r)[:1] * (hi - lo) + lo,
            "scale_y": drawn(s + 1, r)[:1] * (hi - lo) + lo,
        }
    if op == "rotate":
        return {"rotate_deg": (drawn(s, r)[:1] - 0.5) * 2 * 15.0}
    raise ValueError(op)


def rdd_output(op: str, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return DSATransform((op,), params, (SIZE, SIZE))(x)


def reference_output(ref: Path, op: str, x: torch.Tensor) -> torch.Tensor:
    sys.path.insert(0, str(ref))
    import utils  # the reference's utils.py

    param = utils.ParamDiffAug()
    param.Siamese, param.latestseed = True, SEED
    for fn in utils.AUGMENT_FNS[op]:
        x = fn(x, param)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="checkout of VICO-UoE/DatasetCondensation")
    parser.add_argument("--record", action="store_true", help=f"write {FIXTURE.name}")
    args = parser.parse_args()
    record = {"command": "benchmarks/parity/dsa_parity.py <checkout> --record"}
    for op in OPS:
        theirs = reference_output(args.reference, op, batch())
        params = reference_params(op)
        ours = rdd_output(op, params, batch())
        diff = float((ours - theirs).abs().max() / theirs.abs().max())
        print(f"{op:8s} max relative difference {diff:.2e}")
        record[op] = {"params": params, "output": theirs}
    if args.record:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        torch.save(record, FIXTURE)
        print(f"recorded {FIXTURE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
