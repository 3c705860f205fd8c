"""What every parity script shares: its command line, the comparison and the recording."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]


def copy_weights(reference: nn.Module, ours: nn.Module) -> None:
    """rdd's network weights into the reference's, parameter by parameter (same order and
    shapes), so that both compute with the same network."""
    with torch.no_grad():
        for theirs, mine in zip(reference.parameters(), ours.parameters(), strict=True):
            theirs.copy_(mine)


def max_relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs|."""
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30))


def main(
    doc: str,
    fixture: Path,
    reference_help: str | None,
    reference_figures: Callable[..., dict[str, torch.Tensor]],
    rdd_figures: Callable[[], dict[str, torch.Tensor]],
) -> None:
    """Parse ``[reference] [--record]``, print the max relative difference per quantity and,
    with --record, save the reference's figures and the command to ``fixture``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if reference_help is not None:
        parser.add_argument("reference", type=Path, help=reference_help)
    parser.add_argument("--record", action="store_true", help=f"write {fixture.name}")
    args = parser.parse_args()
    given = (args.reference,) if reference_help is not None else ()
    theirs, ours = reference_figures(*given), rdd_figures()
    for key, value in theirs.items():
        print(f"{key:22s} max relative difference {max_relative_difference(ours[key], value):.2e}")
    if args.record:
        fixture.parent.mkdir(parents=True, exist_ok=True)
        script = Path(__import__("sys").argv[0]).name
        command = f"benchmarks/parity/{script}{' <reference>' if given else ''} --record"
        torch.save({"command": command, **theirs}, fixture)
        print(f"recorded {fixture.relative_to(REPO)}")


class FixedBatches:
    """What DC's and DM's matching read of the learner, on fixed batches: class c's real batch
    is rows ``[c * per_class, (c + 1) * per_class)`` of ``real``; an image step leaves its
    gradient in ``images.grad`` (backpropagated term by term, as the learner does) and its
    detached loss in ``losses``."""

    robust_matching = False

    def __init__(self, real: torch.Tensor, syn: torch.Tensor, classes: int, ipc: int) -> None:
        self.real, self.per_class = real, len(real) // classes
        self.images = nn.Parameter(syn.clone())
        self.num_classes, self.ipc = classes, ipc
        self.labels = torch.arange(classes).repeat_interleave(ipc)
        self.generator = torch.Generator().manual_seed(0)
        self.losses: list[torch.Tensor] = []

    def sample_real(self, c: int, n: int) -> torch.Tensor:
        return self.real[c * self.per_class : c * self.per_class + n]

    def image_step(self, loss: torch.Tensor) -> None:
        self.summed_image_step((loss,))

    def summed_image_step(self, terms: Iterable[torch.Tensor]) -> torch.Tensor:
        from rdd.matching.base import backward_each  # the scripts put src/ on the path later

        self.images.grad = None
        values = backward_each(terms, torch.Tensor.backward)
        self.losses.append(values.sum())
        return values
