"""Progress inside one slow distillation iteration (no Lightning: matchers use it).

DC/DSA's outer steps (60-120 s per iteration on CIFAR-10 at IPC 10 on a CPU) and MTT's
unroll get a transient bar, shown only once an iteration has run a few seconds. The bar over
the iterations themselves is :class:`rdd.iteration_bar.IterationBar`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

from rdd.distributed import rank

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
