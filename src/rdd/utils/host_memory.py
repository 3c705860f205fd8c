"""Keep freed host memory in the process, so that an iteration reuses the pages the last one
touched (``trainer.keep_host_memory``, default true).

On a CPU every iteration of a matching method allocates and frees the same large tensors
(a ConvNet-3 w128 feature map of 100 CIFAR images is 52 MB). glibc's malloc serves blocks of
more than 32 MB with a fresh ``mmap`` and gives them back with ``munmap`` when they are freed,
so each new block is faulted in page by page and zeroed by the kernel again: 6.4 million
page faults in one MTT iteration of 20 student steps (benchmarks/README.md, "Host memory"). With
``mmap`` off and the heap never trimmed, freed blocks stay mapped and are reused. Values do
not change; the process keeps its peak footprint instead of shrinking between iterations,
and the heap's fragmentation raises that peak (~18 % for MTT).
PyTorch's CUDA caching allocator does the same for GPU memory; this is the host's share.

Other C libraries (macOS, musl) are left as they are.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free memory at the heap's top above this is returned
M_MMAP_MAX = -4  # at most this many blocks served by mmap at once (0: none)


def keep_freed_host_memory() -> bool:
    """Serve every allocation from malloc's heap and never trim it; returns whether it
    applied (False where the C library is not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # mallopt returns 1 on success; -1 disables trimming altogether (man 3 mallopt).
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
