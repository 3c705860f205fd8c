"""Keep freed host memory in the process, so that an iteration reuses the pages the last one
touched (``trainer.keep_host_memory``, default true).

On a CPU every iteration of a matching method allocates and frees the same large tensors
(a ConvNet-3 w128 feature map of 100 CIFAR images is 52 MB). glibc's malloc serves blocks of
more than 32 MB with a fresh ``mmap`` and gives them back with ``munmap`` when they are freed,
so each new block is faulted in page by page and zeroed by the kernel again: 6.4 million
page faults in one MTT iteration of 20 student steps (benchmarks/README.md, "Host memory"). With
``mmap`` off and the heap never trimmed, freed blocks stay mapped and are reused. Values do
not change; the process keeps its peak footprint instead of shrinking between iterations,
and the heap's fragmentation can raise that peak (MTT's was 18 % higher until its unroll was
mapped: below).
PyTorch's CUDA caching allocator does the same for GPU memory; this is the host's share.

MTT's unroll is the one place where most allocations outlive the code that makes them: every
student step's saved tensors stay until the meta-gradient's backward. In a kept heap the
temporaries freed between them leave holes that later requests fit badly, so
:func:`mapped_while_long_lived` gives that section glibc's mapping back (its blocks are
unmapped when freed) and the backward, whose blocks are short-lived, reuses the kept heap.

Other C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free memory at the heap's top above this is returned
M_MMAP_THRESHOLD = -3  # blocks of at least this many bytes are served by mmap
M_MMAP_MAX = -4  # at most this many blocks served by mmap at once (0: none)
GLIBC_MMAP_MAX = 65536  # glibc's defaults (malloc/malloc.c): DEFAULT_MMAP_MAX
GLIBC_THRESHOLD = 128 * 1024  # DEFAULT_MMAP_THRESHOLD_MIN and DEFAULT_TRIM_THRESHOLD

KEPT = {"mmap_max": 0, "trim_threshold": -1}  # mmap off; -1: never trim (man 3 mallopt)
_OPTION_CODES = {
    "mmap_max": M_MMAP_MAX,
    "mmap_threshold": M_MMAP_THRESHOLD,
    "trim_threshold": M_TRIM_THRESHOLD,
}

_kept = False  # whether keep_freed_host_memory applied in this process


def keep_freed_host_memory() -> bool:
    """Serve every allocation from malloc's heap and never trim it; returns whether it
    applied (False where the C library is not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    global _kept
    _kept = _set(**KEPT)
    return _kept


@contextlib.contextmanager
def mapped_while_long_lived() -> Iterator[None]:
    """Inside, where this process keeps freed memory: blocks of 128 KiB and more get a mapping
    of their own, given back when freed, as glibc does by default; the kept heap is back on
    exit. Elsewhere (memory not kept, not glibc) nothing changes.

    For a section whose allocations mostly outlive it (MTT's unroll): they stay out of the
    kept heap, so they cannot leave it fragmented. MTT at 20 and 30 student steps: 0.93-0.94x
    of mtt-distillation's peak memory at 0.86-0.87x of its time, against 1.18-1.19x of its
    peak with the whole iteration kept (benchmarks/README.md, "Host memory")."""
    if not _kept:
        yield
        return
    # The threshold is set as well: glibc stops adapting it once mallopt has been called,
    # and it may have grown before memory was kept.
    _set(mmap_max=GLIBC_MMAP_MAX, mmap_threshold=GLIBC_THRESHOLD, trim_threshold=GLIBC_THRESHOLD)
    try:
        yield
    finally:
        _set(**KEPT)


def _set(**options: int) -> bool:
    """glibc's mallopt for each of ``mmap_max``, ``mmap_threshold``, ``trim_threshold``;
    whether all applied (mallopt returns 1 on success)."""
    libc = ctypes.CDLL(None)
    return all([bool(libc.mallopt(_OPTION_CODES[name], v)) for name, v in options.items()])
