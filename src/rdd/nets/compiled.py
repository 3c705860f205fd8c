"""A network's first-order passes through ``torch.compile`` (``matching.compile_nets``).

The matchers run a network many thousands of times with the same shapes: real batches for the
real gradient (DC/DSA) or the mean embedding (DM/IDM), the synthetic set's training epochs, the
queue networks' steps. Inductor fuses each layer's norm, activation and pooling into the
convolution's neighbours, which on a CPU runs these passes 1.4-3x faster (benchmarks/README.md,
"rdd against the reference implementations"). Two limits decide where it is used:

* AOTAutograd has no double backward, so every pass whose gradient is differentiated again
  (DC/DSA's synthetic gradient with ``create_graph``, MTT's unroll) stays eager;
* compiled kernels sum in another order: results agree with eager ones to float rounding
  (~1e-6 relative), not bitwise; a compiled run is still the same run after run.

``compile_nets: auto`` (the default) compiles where it repays the compilation: on a CPU,
images of at least 32x32 (a CIFAR-size ConvNet pass takes tens of milliseconds, a digits one a
fraction of one) and at least :data:`AUTO_MIN_PASSES` real-batch passes per class (DM/IDM
iterations, DC/DSA iterations x outer loops), and only where torch.compile works here (checked
once by compiling a tiny function; a fallback is one warning line). So ``make run`` and the
tiny test configs stay eager and bitwise equal to the parity fixtures, and a CIFAR run
compiles. On a GPU ``auto`` runs eager: there the compiled passes were slower (one H100).

Compiled code is cached on the network's class, not on the instance: a fresh network of the
same architecture (DC's new network per outer iteration, IDM's queue) reuses it; the first use
of each shape costs the compilation (tens of seconds on a 2-core CPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

AUTO_MIN_SIDE = 32  # pixels: below it a pass is too short for compiled kernels to repay
AUTO_MIN_PASSES = 100  # real-batch passes per class over a run


class FirstOrderPasses:
    """``net``'s forward and ``embed`` compiled; gradients flow to ``net``'s own parameters.

    Use only where the result is differentiated once (``torch.autograd.grad`` without
    ``create_graph``, or ``backward``).
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self._forward: Callable[[torch.Tensor], torch.Tensor] = torch.compile(net)
        self.embed: Callable[[torch.Tensor], torch.Tensor] = torch.compile(net.embed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of images (N, C, H, W)."""
        return self._forward(x)


def first_order(net: nn.Module, enabled: bool | str) -> nn.Module | FirstOrderPasses:
    """``net`` itself, or its compiled passes when ``enabled`` is true (both callable, both
    with ``embed``); an unresolved ``auto`` (a matcher built outside a run) runs eager."""
    return FirstOrderPasses(net) if enabled is True else net


def check_compile_setting(value: Any) -> None:
    """``matching.compile_nets`` is true, false or auto."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError(
            f"matching.compile_nets must be true, false or auto, got '{value}': set "
            "matching.compile_nets=auto (compile where it repays) or false"
        )


@functools.cache
def compile_problem() -> str | None:
    """Why torch.compile does not work in this process (None: it does), found by compiling
    and running a tiny function once (inductor needs a C++ compiler on a CPU)."""
    try:
        torch.compile(lambda x: torch.relu(x) * 2.0)(torch.ones(4))
    except Exception as err:  # any backend failure means: run eager
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return None


def resolve_compile(
    setting: Any, image_size: tuple[int, int], passes: int, device_type: str = "cpu"
) -> tuple[bool, str]:
    """Whether a run on ``device_type`` compiles its networks, and a notice when ``auto``
    falls back to eager for want of a working backend ("" otherwise)."""
    if setting != "auto":
        return bool(setting), ""
    if device_type != "cpu":
        # On one H100 every compiled item of bench_vs_reference.py (CIFAR, IPC 10) was
        # slower than the eager one (benchmarks/README.md, "On a GPU"): at these sizes a GPU
        # pass is bound by launches, which compiled kernels do not remove.
        return False, ""
    if min(image_size) < AUTO_MIN_SIDE or passes < AUTO_MIN_PASSES:
        return False, ""
    if (problem := compile_problem()) is not None:
        return False, f"matching.compile_nets=auto runs eager: torch.compile fails here ({problem})"
    return True, ""
