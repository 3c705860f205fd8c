"""ZCA whitening of flattened images, fitted with kornia exactly as MTT (Cazenavette et al.
2022) fits it for CIFAR.

MTT fits ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)`` on the raw [0, 1] float32
training images (ToTensor(), no mean/std; rdd.data applies none with ZCA either). The fit here
is kornia's ``zca_mean`` on the same images, so the transforms are kornia's own: with the
unbiased covariance of the centred flattened images x (N, D), D = C*H*W, decomposed as
cov = U diag(S) U^T,

    whiten(x)   = (x - mean) @ T,               T     = U diag(1 / sqrt(S + eps)) U^T
    unwhiten(y) = (y + mean @ T) @ T_inv,        T_inv = U diag(sqrt(S + eps)) U^T

(kornia's ``forward`` and ``inverse_transform``, applied with its ``linear_transform``). eps
regularises the small eigenvalues, so the fit also works when N < D. What stays ours: the
input checks, applying the transforms in row chunks on any device and dtype, and the saved
state (tensors and floats only, loadable with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kornia.enhance import linear_transform, zca_mean
from torch import Tensor

from rdd.utils.io import atomic_write

# Bump when the fit changes so old cache files are not reused (2: kornia's fit).
ZCA_VERSION = 2
CHUNK_ROWS = 4096  # rows per matmul: bounds the temporaries when whitening 45000 images
# A D x D covariance plus the SVD's workspace; 64x64 RGB (Tiny ImageNet) is the largest.
MAX_DIM = 64 * 64 * 3
STATE_KEYS = {"mean", "transform", "transform_inv", "eps"}
# Sets and cache files written before kornia was used store the eigendecomposition instead.
LEGACY_KEYS = {"mean", "eigvecs", "eigvals", "eps"}


@dataclass(eq=False)
class ZCA:
    """A fitted ZCA whitening transform (kornia's ``ZCAWhitening`` buffers, flattened).

    Attributes:
        mean: float32 (D,) mean of the flattened training images (kornia's ``mean_vector``).
        transform: float32 (D, D) whitening matrix T (kornia's ``transform_matrix``).
        transform_inv: float32 (D, D) its inverse T_inv (kornia's ``transform_inv``).
        eps: Regulariser added to the eigenvalues (> 0).
    """

    mean: Tensor
    transform: Tensor
    transform_inv: Tensor
    eps: float
    # (kind, device, dtype) -> (matrix, mean) as linear_transform takes them; never saved.
    _cache: dict[tuple[str, torch.device, torch.dtype], tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def dim(self) -> int:
        """D = C*H*W, the length of a flattened image."""
        return int(self.mean.numel())

    @classmethod
    def fit(cls, x: Tensor, eps: float = 0.1) -> ZCA:
        """Fit on images x (N, C, H, W), N >= 2, with kornia's ``zca_mean``.

        The covariance is computed in x's dtype (MTT passes float32; kornia then decomposes it
        in float64); pass float64 images for a more accurate fit.
        """
        _check_eps(eps)
        if x.ndim != 4 or len(x) < 2:
            raise ValueError(f"ZCA.fit needs images (N, C, H, W) with N >= 2, got {tuple(x.shape)}")
        d = math.prod(x.shape[1:])
        if d > MAX_DIM:
            raise ValueError(
                f"ZCA needs a {d} x {d} covariance for images of {d} values (at most {MAX_DIM}): "
                "set data.zca=false or a smaller data.image_size"
            )
        x = x.detach() if x.is_floating_point() else x.detach().float()
        transform, mean, transform_inv = zca_mean(x, dim=0, eps=float(eps), return_inverse=True)
        as_f32 = lambda t: t.float().cpu().contiguous()  # noqa: E731
        return cls(as_f32(mean.view(-1)), as_f32(transform), as_f32(transform_inv), float(eps))

    def _get(self, kind: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (kind, device, dtype)
        if key not in self._cache:
            mean = self.mean.view(1, -1).to(device=device, dtype=dtype)
            transform = self.transform.to(device=device, dtype=dtype)
            if kind == "whiten":
                self._cache[key] = (transform, mean)
            else:  # kornia's inverse_transform: centre on -mean @ T, then multiply by T_inv
                inverse = self.transform_inv.to(device=device, dtype=dtype)
                self._cache[key] = (inverse, -mean.mm(transform))
        return self._cache[key]

    def _apply(self, x: Tensor, kind: str) -> Tensor:
        if x.ndim not in (3, 4) or math.prod(x.shape[-3:]) != self.dim:
            raise ValueError(
                f"ZCA was fitted on images of {self.dim} values; got a tensor of shape "
                f"{tuple(x.shape)} (expected (N, C, H, W) or (C, H, W) with C*H*W = {self.dim})"
            )
        # float64 stays float64; half precision and integers are computed in float32.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        matrix, mean = self._get(kind, x.device, dtype)
        flat = x.reshape(-1, self.dim)
        out = torch.empty(flat.shape, dtype=dtype, device=x.device)
        for start in range(0, len(flat), CHUNK_ROWS):
            rows = flat[start : start + CHUNK_ROWS].to(dtype)
            out[start : start + CHUNK_ROWS] = linear_transform(rows, matrix, mean)
        out = out.view(x.shape)
        return out.to(x.dtype) if x.is_floating_point() else out

    def whiten(self, x: Tensor) -> Tensor:
        """Normalised images (N, C, H, W) or (C, H, W), any device -> whitened, same shape."""
        return self._apply(x, "whiten")

    def unwhiten(self, x: Tensor) -> Tensor:
        """Whitened images (N, C, H, W) or (C, H, W) -> normalised images, same shape."""
        return self._apply(x, "unwhiten")

    def state(self) -> dict[str, Tensor | float]:
        """Tensors and a float only, so it loads with ``torch.load(weights_only=True)``."""
        return {
            "mean": self.mean,
            "transform": self.transform,
            "transform_inv": self.transform_inv,
            "eps": self.eps,
        }

    @classmethod
    def from_state(cls, state: Any) -> ZCA:
        """Rebuild from :meth:`state`, or from the eigendecomposition older files store.

        Raises:
            ValueError: entries missing, of the wrong type or shape, not finite, or eps <= 0.
        """
        if not isinstance(state, dict) or not (
            state.keys() >= STATE_KEYS or state.keys() >= LEGACY_KEYS
        ):
            raise ValueError("ZCA state must be a dict with mean, transform, transform_inv and eps")
        legacy = not state.keys() >= STATE_KEYS
        names = ("mean", "eigvecs", "eigvals") if legacy else ("mean", "transform", "transform_inv")
        mean, first, second = (state[k] for k in names)
        if not all(isinstance(t, Tensor) and t.is_floating_point() for t in (mean, first, second)):
            raise ValueError(f"ZCA state: {', '.join(names)} must be float tensors")
        d = mean.numel()
        shapes = [(d,), (d, d), (d,) if legacy else (d, d)]
        if d == 0 or [tuple(t.shape) for t in (mean, first, second)] != shapes:
            got = ", ".join(f"{k} {tuple(state[k].shape)}" for k in names)
            raise ValueError(f"ZCA state: inconsistent shapes {got} (expected {shapes})")
        if not all(bool(torch.isfinite(t).all()) for t in (mean, first, second)):
            raise ValueError(f"ZCA state: {', '.join(names)} hold NaN or inf")
        eps = state["eps"]
        _check_eps(eps)
        if legacy:
            if bool((second < 0).any()):
                raise ValueError("ZCA state: negative eigenvalues")
            first, second = _transforms_from_eigh(first, second, float(eps))
        as_f32 = lambda t: t.detach().float().cpu().contiguous()  # noqa: E731
        return cls(as_f32(mean), as_f32(first), as_f32(second), float(eps))


def _transforms_from_eigh(eigvecs: Tensor, eigvals: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """T and T_inv of an old file's U, S: U diag((S + eps)^(-+1/2)) U^T, as kornia builds them,
    in float64 so the products are accurate before the cast."""
    u, s = eigvecs.double(), eigvals.double() + eps
    return (u * s.rsqrt()) @ u.T, (u * s.sqrt()) @ u.T


def _check_eps(eps: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise ValueError(f"ZCA eps must be a finite number > 0, got {eps!r}")


def cache_file_name(key: str, eps: float) -> str:
    """``zca-<sha1 prefix>.pt``; the hash covers the caller's data identity and eps."""
    blob = json.dumps({"version": ZCA_VERSION, "key": key, "eps": float(eps)}, sort_keys=True)
    return f"zca-{hashlib.sha1(blob.encode()).hexdigest()[:16]}.pt"


def load_or_fit(x: Tensor, eps: float, cache_dir: str | Path | None, key: str) -> ZCA:
    """:meth:`ZCA.fit` on x (N, C, H, W), cached in ``cache_dir`` under a name hashed from
    ``key`` (which must identify the data x) and eps; None disables caching.

    An unreadable or mismatching cache file is refitted with a warning; a failed write only
    warns (a read-only cache should not stop a run that has its data).
    """
    if cache_dir is None:
        return ZCA.fit(x, eps)
    path = Path(cache_dir).expanduser().absolute() / cache_file_name(key, eps)
    if path.is_file():
        try:
            zca = ZCA.from_state(torch.load(path, map_location="cpu", weights_only=True))
            if zca.dim != math.prod(x.shape[1:]) or zca.eps != float(eps):
                raise ValueError(f"fitted on {zca.dim} values with eps {zca.eps}")
            return zca
        except Exception as e:  # noqa: BLE001 - any broken cache file is just refitted
            warnings.warn(f"ZCA cache file '{path}' is unreadable ({e!r}); refitting", stacklevel=2)
    zca = ZCA.fit(x, eps)

    def write(tmp: Path) -> None:
        torch.save(zca.state(), tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache may be shared

    try:
        atomic_write(path, write)
    except OSError as e:
        warnings.warn(f"could not write ZCA cache file '{path}' ({e}); continuing", stacklevel=2)
    return zca
