"""A network's first-order passes through ``torch.compile`` (``matching.compile_nets``).

The matchers run a network many thousands of times with the same shapes: real batches for the
real gradient (DC/DSA) or the mean embedding (DM/IDM), the synthetic set's training epochs, the
queue networks' steps. Inductor fuses each layer's norm, activation and pooling into the
convolution's neighbours, which on a CPU runs these passes 1.4-3x faster (benchmarks/README.md,
"rdd against the reference implementations"). Two limits decide where it is used:

* AOTAutograd has no double backward, so every pass whose gradient is differentiated again
  (DC/DSA's synthetic gradient with ``create_graph``, MTT's unroll) stays eager;
* compiled kernels sum in another order: results agree with eager ones to float rounding
  (~1e-6 relative), not bitwise, so the option is off by default and the parity fixtures and
  bitwise determinism tests hold for the default.

Compiled code is cached on the network's class, not on the instance: a fresh network of the
same architecture (DC's new network per outer iteration, IDM's queue) reuses it; the first use
of each shape costs the compilation (tens of seconds on a 2-core CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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


def first_order(net: nn.Module, enabled: bool) -> nn.Module | FirstOrderPasses:
    """``net`` itself, or its compiled passes when ``enabled`` (both callable, both with
    ``embed``)."""
    return FirstOrderPasses(net) if enabled else net
