"""Small file helpers: atomic writes so that a crash never leaves half a file behind, cached
tensors keyed by a digest of what they are computed from, and torch files opened without
running code, with what a refused file holds said in words (:func:`refusal`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickletools
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
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


def torch_load_safely(path: str | Path, allowed: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (``allowed``: more classes to
    rebuild), without torch's warnings: their advice (load with weights_only=False, file an
    issue) is not for rdd's users. Raises what torch raises; :func:`refusal` says why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)


# Modules whose pickled names rebuild data (tensors, containers, NumPy scalars), not code.
DATA_MODULES = ("torch", "collections", "_codecs", "numpy")


def refusal(path: str | Path) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``: the rest of a sentence that
    starts with the file's name, from what the file holds (its pickles read without running
    them), never torch's own text, which tells the user to load the file unsafely."""
    path = Path(path)
    try:
        names = pickled_names(path)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if code_in(names):
        return holds_code(code_in(names))
    if zipfile.is_zipfile(path):
        return (
            "is a torch.save archive of objects other than tensors, numbers and strings, "
            "so it was not loaded"
        )
    if names is None:
        with path.open("rb") as handle:
            if handle.read(4) == b"PK\x03\x04":  # a zip's first entry, but no directory
                return "is a damaged or truncated torch.save archive"
        return "is neither a torch.save file nor a pickle (its bytes are random or damaged)"
    return "is a pickle, not a torch.save file"


def code_in(names: list[str] | None) -> list[str]:
    """The pickled globals that are functions or classes beyond data (``posix.system``)."""
    code = [name for name in names or () if name.split(".")[0] not in DATA_MODULES]
    return list(dict.fromkeys(code))


def holds_code(code: list[str]) -> str:
    return f"holds code ({', '.join(code)}) that loading would run, so it was not loaded"


def pickled_names(path: Path) -> list[str] | None:
    """``module.name`` of every global the file's pickles would import, read without running
    them: those of a torch.save archive's data.pkl, or of the pickles a plain file starts
    with; None when neither holds a pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not members:
                return None
            with archive.open(members[0]) as handle:
                return names_in_pickles(handle)
    with path.open("rb") as handle:
        return names_in_pickles(handle)


def names_in_pickles(handle: Any) -> list[str] | None:
    """The globals of the pickles one after another in ``handle`` (torch's legacy format is
    several pickles, then raw bytes), up to the first thing that is not a pickle; None when
    it does not start with one."""
    starts_with_proto = handle.read(1) == b"\x80"
    handle.seek(0)
    names: list[str] = []
    parsed, to_the_end = 0, True
    while handle.read(1):
        handle.seek(-1, os.SEEK_CUR)
        try:
            names += names_in_pickle(handle)
        except ValueError:  # what pickletools raises for bytes that are no pickle
            to_the_end = False
            break
        parsed += 1
    # Pickles of protocol 2+ (pickle.dump's, torch's) start with PROTO; random bytes may
    # parse as a short older pickle, so one without PROTO must fill the file.
    return names if parsed and (starts_with_proto or to_the_end) else None


def names_in_pickle(handle: Any) -> list[str]:
    """The globals one pickle imports: GLOBAL and INST name them, STACK_GLOBAL takes the two
    strings pushed before it (protocol 4+, either perhaps fetched from the memo)."""
    names, pushed, memo = [], [], {}
    for op, arg, _ in pickletools.genops(handle):
        if op.name in ("GLOBAL", "INST"):
            names.append(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            names.append(".".join(str(part) for part in pushed[-2:]))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name.endswith("PUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name.endswith("GET"):
            pushed.append(memo.get(arg))
        else:
            pushed.append(arg if isinstance(arg, str) else None)
    return names
