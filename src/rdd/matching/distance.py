"""Distances between the gradient of the synthetic and the real batch (DC, Zhao et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Gradients = Sequence[torch.Tensor]
EPS = 1e-6  # keeps 1 - cos finite for an all-zero gradient row, as in the DC paper's code


def layerwise_distance(g_syn: Gradients, g_real: Gradients) -> torch.Tensor:
    """DC's distance: for each weight tensor, sum over output units of (1 - cosine).

    A conv weight (out, in, kh, kw) is compared row by row after flattening each output
    channel; a linear weight (out, in) row by row. One-dimensional parameters (biases, norm
    affine) are ignored, as in the paper.

    Args:
        g_syn, g_real: gradients, one tensor per network parameter, in the same order.

    Returns:
        Scalar distance (differentiable w.r.t. ``g_syn``).
    """
    total = g_syn[0].new_zeros(())
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gs.ndim < 2:
            continue
        gs, gr = gs.reshape(gs.shape[0], -1), gr.reshape(gr.shape[0], -1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + EPS)
        total = total + (1 - cos).sum()
    return total


def mse_distance(g_syn: Gradients, g_real: Gradients) -> torch.Tensor:
    """Squared Euclidean distance between the concatenated gradients."""
    return sum(((gs - gr) ** 2).sum() for gs, gr in zip(g_syn, g_real, strict=True))


def cosine_distance(g_syn: Gradients, g_real: Gradients) -> torch.Tensor:
    """1 - cosine between the concatenated gradients."""
    vs = torch.cat([g.reshape(-1) for g in g_syn])
    vr = torch.cat([g.reshape(-1) for g in g_real])
    return 1 - (vs * vr).sum() / (vs.norm() * vr.norm() + EPS)


DISTANCES: dict[str, Callable[[Gradients, Gradients], torch.Tensor]] = {
    "layerwise": layerwise_distance,
    "mse": mse_distance,
    "cosine": cosine_distance,
}


def get_distance(name: str) -> Callable[[Gradients, Gradients], torch.Tensor]:
    if name not in DISTANCES:
        raise ValueError(
            f"unknown matching.distance '{name}': choose one of {', '.join(DISTANCES)}"
        )
    return DISTANCES[name]
