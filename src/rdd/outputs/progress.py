"""Progress inside one slow step of a longer count (no Lightning: matchers use it).

DC/DSA's outer steps (60-120 s per iteration on CIFAR-10 at IPC 10 on a CPU) and MTT's
unroll get a transient bar, shown only once an iteration has run a few seconds. The bar over
the iterations themselves is :class:`rdd.outputs.iteration_bar.IterationBar`. Likewise the epochs
of one evaluation network (:class:`EpochBar`), under the evaluation's bar over networks:
the whole-dataset reference trains one network for an hour on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from rdd.parallel.distributed import rank

T = TypeVar("T")

# An inner bar appears only once an iteration has run this long (tqdm's `delay`): fast
# iterations (digits, DM) stay one line.
INNER_BAR_DELAY_S = 3.0


def inner_steps(steps: Iterable[T], total: int, what: str, show: bool = True) -> Iterator[T]:
    """``steps``, with a transient bar (``what``) once the iteration has run a few seconds.

    Only rank 0 shows it, and only when ``show`` (the run's progress bar is enabled).
    """
    if not show or rank() != 0:
        yield from steps
        return
    yield from tqdm(
        steps, total=total, desc=what, leave=False, delay=INNER_BAR_DELAY_S, dynamic_ncols=True
    )


class EpochBar:
    """A transient bar over one network's training epochs, advanced every optimizer step and
    shown once the training has run a few seconds, with the time each epoch takes:
    ``network:   4%|4         | epoch 12.5/300 [02:10<50:03, 10.43s/epoch]``.

    Args:
        epochs: the epochs the network trains.
        steps_per_epoch: its optimizer steps (batches) per epoch.
        show: False (a worker process, whose bars would interleave): no bar.
    """

    FORMAT = (
        "{desc}: {percentage:3.0f}%|{bar}| epoch {n:.1f}/{total} "
        "[{elapsed}<{remaining}, {rate_inv_fmt}]"
    )

    def __init__(self, epochs: int, steps_per_epoch: int, show: bool = True) -> None:
        self.step_size = 1 / steps_per_epoch
        self.bar = tqdm(
            total=epochs,
            desc="network",
            unit="epoch",
            bar_format=self.FORMAT,
            leave=False,
            delay=INNER_BAR_DELAY_S,
            dynamic_ncols=True,
            disable=not show,
        )

    def step(self) -> None:
        """One optimizer step done (a fraction of an epoch: a long epoch moves too)."""
        self.bar.update(self.step_size)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> EpochBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
