"""Stable seeds derived from names, for every seeded draw that is not the run's own generator."""

from __future__ import annotations

import zlib


def derived_seed(*parts: object) -> int:
    """A stable seed from parts (Python's hash() of strings changes between processes)."""
    return zlib.crc32("/".join(map(str, parts)).encode())
