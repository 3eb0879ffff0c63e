"""Keep freed tensor memory in the process (glibc ``mallopt``), so CPU steps stop page-faulting.

A CPU training step allocates and frees hundreds of activation-sized blocks (100 KB - 10 MB).
glibc's defaults hand blocks above a (dynamic) threshold to ``mmap`` and give the top of the heap
back to the kernel whenever more than twice that threshold is free; every new block then costs
one page fault per 4 KiB page as it is first written. On the demo's training step that was
~7,800 minor faults per step and one process; with the two settings below, under 100, and the
2-rank demo training measured 19% more samples/s in two paired runs (``benchmarks/train.py``; README).

The price is that freed memory stays in the process (its RSS does not shrink back after a
peak); the peak itself is unchanged. Blocks above ``mmap_threshold`` still come from ``mmap``
and go back at once. Only glibc has ``mallopt``; elsewhere (musl, macOS) this does nothing,
and a ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set by the user wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: The largest mmap threshold glibc accepts on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD_MAX = 32 * 2**20

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 2**40) -> bool:
    """Serve blocks up to ``mmap_threshold`` bytes from the heap and return freed heap to the
    kernel only beyond ``trim_threshold`` bytes. Returns whether the settings were applied
    (False off glibc or when the user tuned malloc through the environment)."""
    if any(os.environ.get(name) for name in _USER_SETTINGS):
        log.debug("malloc tuned through the environment: left as set")
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no glibc mallopt here: malloc left at its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    cap = 2**31 - 1  # mallopt takes an int
    ok = mallopt(M_MMAP_THRESHOLD, min(mmap_threshold, cap)) == 1
    ok = mallopt(M_TRIM_THRESHOLD, min(trim_threshold, cap)) == 1 and ok
    if not ok:
        log.debug("mallopt refused the thresholds: malloc left at its defaults")
    return ok
