"""Freed tensor memory kept for the next minibatch step (glibc's malloc, tuned once).

A step allocates and frees the same large ``(P, B, n)`` tensors again and again. By default
glibc serves large requests with ``mmap`` and gives the top of its heap back to the system
whenever more than its trim threshold (twice the largest chunk freed so far) lies free, so
the next step's tensors fault their pages in again and the kernel zeroes each one: 105,000
page faults in three epochs of 64 networks of width 128 on 1,400 rows, 3,400 after this
module's two settings. Measured with ``bench/throughput.py`` (P = 64, digits, 10 epochs, one
thread, before and after at once on two cores, twice): a run took 4.84-4.89 s instead of
5.51-5.78 s at width 128 (1.7-1.9× its matrix products instead of 2.1-2.2×); at width 32,
whose tensors are small, 1.02-1.09 s against 1.03-1.41 s (bench/README.md, "Page faults").

The settings, through ``mallopt``:

- ``M_MMAP_THRESHOLD`` 32 MiB, the ceiling glibc's own adaptive threshold has on 64-bit
  systems: requests below it come from the heap, where freed memory can be reused.
- ``M_TRIM_THRESHOLD`` 1 GiB: up to that much free memory stays in the heap for the next
  step instead of going back to the system (and faulting in again); beyond it, the heap is
  trimmed as usual, so a large run's peak is not held forever.

They apply to the whole process, as ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``
in the environment would. Where the environment already sets either, where there is no glibc
(macOS, Windows, musl), or on a GPU (whose memory PyTorch caches itself), nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_tried = False
_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc (see the module docstring), once per process; whether it is tuned.
    Populations on the CPU call it when they are built."""
    global _tried, _applied
    if _tried:
        return _applied
    _tried = True
    if not sys.platform.startswith("linux") or any(os.environ.get(v) for v in ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library by that name, or not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                    and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
