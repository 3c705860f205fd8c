"""Synthetic sets made by other tools, read for rdd.evaluate.

``files`` opens torch files and pickles without running their code; ``formats`` has one reader
per tool (what VICO's DC/DSA/DM, MTT and IDM write, documented there); ``convert`` maps a set
into rdd's input space (normalisation, ZCA, soft labels, IDM's expansion factor).
"""

from __future__ import annotations

from pathlib import Path

from rdd.config.errors import UserError
from rdd.imports.convert import ImportedSet, convert
from rdd.imports.formats import (
    FORMATS,
    RawSet,
    detect_format,
    read_idm,
    read_mtt,
    read_plain,
    read_vico,
)

__all__ = ["FORMATS", "ImportedSet", "RawSet", "convert", "read_foreign", "resolve_format"]


def resolve_format(path: str | Path, fmt: str) -> str:
    """The format to read ``path`` as: ``fmt``, or the detected one for ``auto``."""
    if fmt not in FORMATS:
        raise UserError(f"unknown synset_format '{fmt}': choose one of {', '.join(FORMATS)}")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(
            f"synthetic set '{path}' not found: pass synset=<run dir, synset.pt or a file "
            "written by VICO, MTT or IDM>"
        )
    return detect_format(path) if fmt == "auto" else fmt


def read_foreign(path: str | Path, fmt: str, experiment: int = 0) -> RawSet:
    """Read a foreign set (``fmt`` one of vico, mtt, idm, plain) as its file holds it."""
    path = Path(path).expanduser()
    if path.is_dir() and fmt != "mtt":
        raise UserError(f"synset_format={fmt} reads a file, but '{path}' is a directory")
    if fmt == "vico":
        return read_vico(path, experiment)
    if fmt == "idm":
        return read_idm(path, experiment)
    if fmt == "mtt":
        return read_mtt(path)
    if fmt == "plain":
        return read_plain(path)
    raise UserError(
        f"synset_format={fmt} is not a foreign format: use one of vico, mtt, idm, plain"
    )
