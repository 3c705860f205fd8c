"""Stable group ids across k-means refits: match every class's new clusters to its old ones.

k-means numbers its clusters arbitrarily, so without matching group ``c*k + j`` of one fit
has nothing to do with group ``c*k + j`` of the next, and any per-group state (a group's
running risk, its logged accuracy) is about another subgroup after a refit. Within every
class, the new clusters are paired one to one with the old ones by the Hungarian algorithm
on the squared distances between their centroids (the pairing with the least total
movement), and each new cluster takes the id of its old partner.

This needs both fits' centroids in one feature space, as with ``pixels``, ``fixed_net`` and
``style`` (whose scaling is fitted once per run); with ``features=embedding`` the network changes between fits, so the match pairs clusters
that sit in the same place of two different embeddings: approximate.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def match_clusters(previous: Tensor, current: Tensor) -> Tensor:
    """The id every current cluster takes: that of the previous cluster it is paired with.

    Args:
        previous: Centroids of the last fit, (C, k, D).
        current: Centroids of the new fit, (C, k, D), in the same feature space.

    Returns:
        ``new_id`` (C, k) int64 on the CPU: current cluster ``j`` of class ``c`` becomes
        cluster ``new_id[c, j]``; every row is a permutation of ``range(k)``.

    Raises:
        ValueError: If the two sets of centroids differ in shape.
    """
    if previous.dim() != 3 or previous.shape != current.shape:
        raise ValueError(
            f"centroids to match must both be (C, k, D) of one shape, got "
            f"{tuple(previous.shape)} and {tuple(current.shape)}"
        )
    old = previous.detach().to("cpu", torch.float64)
    new = current.detach().to("cpu", torch.float64)
    cost = (new.unsqueeze(2) - old.unsqueeze(1)).pow(2).sum(-1)  # (C, k new, k old)
    new_id = torch.empty(current.shape[:2], dtype=torch.int64)
    for c in range(cost.shape[0]):
        rows, cols = linear_sum_assignment(cost[c].numpy())
        new_id[c, torch.from_numpy(rows)] = torch.from_numpy(cols).long()
    return new_id


def renumber(centroids: Tensor, groups: Tensor, new_id: Tensor) -> tuple[Tensor, Tensor]:
    """Apply :func:`match_clusters`' ids: reorder the centroids and rename the groups.

    Args:
        centroids: (C, k, D), in the new fit's order.
        groups: (N,) int64, ``class * k + j`` in the new fit's numbering.
        new_id: (C, k) from :func:`match_clusters`.

    Returns:
        ``(centroids, groups)``: centroids (C, k, D) with cluster ``new_id[c, j]`` at row
        ``new_id[c, j]``, and groups ``class * k + new_id[class, j]``.
    """
    num_classes, k = new_id.shape
    new_id = new_id.to(centroids.device)
    order = torch.argsort(new_id, dim=1)  # order[c, i]: the current cluster that becomes i
    reordered = torch.gather(centroids, 1, order.unsqueeze(-1).expand_as(centroids))
    flat = (torch.arange(num_classes, device=new_id.device).unsqueeze(1) * k + new_id).flatten()
    return reordered, flat.to(groups.device)[groups]
