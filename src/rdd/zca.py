"""ZCA whitening of flattened images, as MTT (Cazenavette et al. 2022) uses for CIFAR.

Fitted on the raw [0, 1] training images x (N, D) with D = C*H*W (as MTT fits kornia's
ZCAWhitening(eps=0.1) on ToTensor() images; rdd.data applies no mean/std with ZCA): the mean over samples, the
unbiased covariance of the centred data and its eigen-decomposition cov = U diag(S) U^T. Then

    whiten(x)   = (x - mean) @ U diag(1 / sqrt(S + eps)) U^T
    unwhiten(y) = y @ U diag(sqrt(S + eps)) U^T + mean

eps regularises the small eigenvalues, so the fit also works when N < D (rank-deficient
covariance). Only the decomposition is stored; the D x D transforms are built on first use.
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
from torch import Tensor

from rdd.io import atomic_write

# Bump when the fit changes so old cache files are not reused.
ZCA_VERSION = 1
CHUNK_ROWS = 4096  # rows per matmul: bounds the temporaries when whitening 45000 images
# A D x D float64 covariance plus eigh's workspace; 64x64 RGB (Tiny ImageNet) is the largest.
MAX_DIM = 64 * 64 * 3


@dataclass(eq=False)
class ZCA:
    """A fitted ZCA whitening transform.

    Attributes:
        mean: float32 (D,) mean of the flattened training images.
        eigvecs: float32 (D, D) eigenvectors U of their covariance, one per column.
        eigvals: float32 (D,) eigenvalues S >= 0.
        eps: Regulariser added to the eigenvalues (> 0).
    """

    mean: Tensor
    eigvecs: Tensor
    eigvals: Tensor
    eps: float
    # (kind, device, dtype) -> matrix or mean; rebuilt on demand, never saved.
    _cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def dim(self) -> int:
        """D = C*H*W, the length of a flattened image."""
        return int(self.mean.numel())

    @classmethod
    def fit(cls, x: Tensor, eps: float = 0.1) -> ZCA:
        """Fit on images x (N, C, H, W), N >= 2, in float64, reading CHUNK_ROWS rows at a time.

        Two passes (the mean, then the centred X^T X) avoid both a float64 copy of the whole
        dataset and the cancellation of the one-pass formula X^T X - N mean mean^T.
        """
        _check_eps(eps)
        if x.ndim != 4 or len(x) < 2:
            raise ValueError(f"ZCA.fit needs images (N, C, H, W) with N >= 2, got {tuple(x.shape)}")
        flat = x.detach().reshape(len(x), -1)
        n, d = flat.shape
        if d > MAX_DIM:
            raise ValueError(
                f"ZCA needs a {d} x {d} covariance for images of {d} values (at most {MAX_DIM}): "
                "set data.zca=false or a smaller data.image_size"
            )
        total = torch.zeros(d, dtype=torch.float64, device=x.device)
        for rows in flat.split(CHUNK_ROWS):
            total += rows.double().sum(0)
        mean = total / n
        cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
        for rows in flat.split(CHUNK_ROWS):
            centred = rows.double() - mean
            cov.addmm_(centred.T, centred)
        cov /= n - 1
        eigvals, eigvecs = torch.linalg.eigh(cov)
        # Rounding makes the zero eigenvalues of a rank-deficient covariance slightly negative.
        eigvals = eigvals.clamp_min(0.0)
        as_f32 = lambda t: t.float().cpu().contiguous()  # noqa: E731
        return cls(as_f32(mean), as_f32(eigvecs), as_f32(eigvals), float(eps))

    def _get(self, kind: str, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (kind, device, dtype)
        if key not in self._cache:
            if kind == "mean":
                value = self.mean
            else:
                # U diag(s) U^T with s = (S + eps)^(-1/2) (whiten) or (S + eps)^(1/2) (unwhiten),
                # built in float64 so the product is accurate before the cast.
                u = self.eigvecs.double()
                power = -0.5 if kind == "whiten" else 0.5
                value = (u * (self.eigvals.double() + self.eps).pow(power)) @ u.T
            self._cache[key] = value.to(device=device, dtype=dtype)
        return self._cache[key]

    def _apply(self, x: Tensor, kind: str) -> Tensor:
        if x.ndim not in (3, 4) or math.prod(x.shape[-3:]) != self.dim:
            raise ValueError(
                f"ZCA was fitted on images of {self.dim} values; got a tensor of shape "
                f"{tuple(x.shape)} (expected (N, C, H, W) or (C, H, W) with C*H*W = {self.dim})"
            )
        # float64 stays float64; half precision and integers are computed in float32.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        matrix, mean = self._get(kind, x.device, dtype), self._get("mean", x.device, dtype)
        flat = x.reshape(-1, self.dim)
        out = torch.empty(flat.shape, dtype=dtype, device=x.device)
        for start in range(0, len(flat), CHUNK_ROWS):
            rows = flat[start : start + CHUNK_ROWS].to(dtype)
            if kind == "whiten":
                out[start : start + CHUNK_ROWS] = (rows - mean) @ matrix
            else:
                out[start : start + CHUNK_ROWS] = torch.addmm(mean, rows, matrix)
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
            "eigvecs": self.eigvecs,
            "eigvals": self.eigvals,
            "eps": self.eps,
        }

    @classmethod
    def from_state(cls, state: Any) -> ZCA:
        """Rebuild from :meth:`state`.

        Raises:
            ValueError: entries missing, of the wrong type or shape, not finite, or eps <= 0.
        """
        if not isinstance(state, dict) or not {"mean", "eigvecs", "eigvals", "eps"} <= state.keys():
            raise ValueError("ZCA state must be a dict with mean, eigvecs, eigvals and eps")
        mean, vecs, vals, eps = (state[k] for k in ("mean", "eigvecs", "eigvals", "eps"))
        if not all(isinstance(t, Tensor) and t.is_floating_point() for t in (mean, vecs, vals)):
            raise ValueError("ZCA state: mean, eigvecs and eigvals must be float tensors")
        d = mean.numel()
        if mean.shape != (d,) or vecs.shape != (d, d) or vals.shape != (d,) or d == 0:
            raise ValueError(
                f"ZCA state: inconsistent shapes mean {tuple(mean.shape)}, eigvecs "
                f"{tuple(vecs.shape)}, eigvals {tuple(vals.shape)} (expected (D,), (D, D), (D,))"
            )
        if not all(bool(torch.isfinite(t).all()) for t in (mean, vecs, vals)):
            raise ValueError("ZCA state: mean, eigvecs or eigvals hold NaN or inf")
        if bool((vals < 0).any()):
            raise ValueError("ZCA state: negative eigenvalues")
        _check_eps(eps)
        as_f32 = lambda t: t.detach().float().cpu().contiguous()  # noqa: E731
        return cls(as_f32(mean), as_f32(vecs), as_f32(vals), float(eps))


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
