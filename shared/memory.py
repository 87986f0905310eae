"""Keep freed memory for reuse instead of handing it back to the kernel (glibc malloc).

PyTorch's CPU tensors come straight from malloc. By default glibc serves a block over its mmap
threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on free, and gives a heap's free
top back to the kernel; a thread's arena heap is unmapped whole once empty. A forward or
backward pass allocates and frees the same large activations every batch, so each batch touches
new pages and pays a page fault per 4 KiB: measured on the 2-core machine for the embedded
victim (bench/malloc_reuse.py), up to 385 faults and 0.5 ms of kernel CPU per clip, a quarter of
the pass; which batch sizes fault depends on what the process allocated before.

:func:`reuse_freed_memory` turns that off for the whole process: every thread allocates from one
heap (no per-thread arenas to unmap), nothing is mmapped, and the heap is never trimmed, so a
process's resident memory stays at its peak and the next batch reuses it. That is what a caching
allocator does; it is the wrong choice for a short script that peaks once, not for a server or
a training loop.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # bytes of free heap top before a trim: the largest value mallopt takes


def reuse_freed_memory() -> bool:
    """Make glibc malloc keep and reuse freed memory (process-wide, idempotent). Returns False,
    changing nothing, where the C library is not glibc (musl, macOS)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Arenas first: a thread that allocates later then shares the main heap, which is the one
    # the trim threshold governs.
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(mallopt(param, value) == 1 for param, value in settings)
