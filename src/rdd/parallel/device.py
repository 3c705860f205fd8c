"""Host-to-device copies that do not make the host wait.

A plain ``t.to(cuda)`` of a CPU tensor in pageable memory is a blocking copy: CUDA waits for
every queued kernel before it returns, so a copy per step (a batch's indices, DSA's
parameters) stalls the GPU pipeline once per step. From pinned memory with
``non_blocking=True`` the copy is queued on the stream like a kernel; the caching host
allocator keeps the pinned buffer until the copy has run. On the CPU this is ``t.to(device)``.
"""

from __future__ import annotations

import torch
from torch import nn


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device`` without a host-device synchronisation (values unchanged)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def module_to_device(net: nn.Module, device: torch.device | str) -> nn.Module:
    """``net.to(device)`` with every parameter and buffer copied by :func:`to_device` (a
    network built on the CPU per iteration: one blocking copy per tensor otherwise)."""
    for t in [*net.parameters(), *net.buffers()]:
        t.data = to_device(t.data, device)
    return net
