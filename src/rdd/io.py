"""Small file helpers: atomic writes so that a crash never leaves half a file behind, and
cached tensors keyed by a digest of what they are computed from."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it into place.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private; a plain file is not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as pretty JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text``, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def tensor_digest(t: torch.Tensor | None, header: str = "") -> str:
    """16 hex digits naming ``header`` and the bytes of ``t`` ("" for no tensor)."""
    if t is None:
        return ""
    digest = hashlib.sha1(header.encode())
    digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_build_tensor(
    path: Path | None, build: Callable[[], torch.Tensor], valid: Callable[[torch.Tensor], bool]
) -> torch.Tensor:
    """The tensor cached at ``path`` if it loads and passes ``valid``, else ``build()``, cached
    there atomically (when a path is given). A damaged cache file is rebuilt, never fatal."""
    if path is not None and path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
            if isinstance(cached, torch.Tensor) and valid(cached):
                return cached
        except Exception as err:  # torch raises many kinds for a damaged file
            log.warning("rebuilding the cache file %s (%s)", path, err)
    built = build()
    if path is not None:
        atomic_write(path, lambda tmp: torch.save(built, tmp))
    return built
