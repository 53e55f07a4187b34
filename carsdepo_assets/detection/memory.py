"""Keep freed memory in the process for reuse (glibc), for training and prediction on CPU.

glibc's ``malloc`` serves blocks above its mmap threshold (at most 32 MiB) with fresh pages and
gives them back to the kernel on free, and trims the heap when its top is free. A forward or
backward pass allocates tensors of that size layer after layer, so each one is page-faulted in
anew: on 2 cores a prediction batch of 8 ran at a third of the speed of the same pass with the
memory kept (15 million page faults in 40 s, ``benchmarks/bench_paths.py``), and a training on
whole 640 px lensor photos spent most of its time in the kernel (160,000 page faults a second).
With freed memory kept, resident memory stays at the process's peak instead of dropping
between batches; the peak itself does not change.

Threads share one arena, the main one. A thread's own glibc arena grows in heaps of at most
64 MiB, so a larger block (the activations of a batch of 8) is mapped afresh and unmapped on
free whatever the settings above say. MLflow's server answers each request in a worker
thread: REST batches of 8 cost 1.1 to 1.5 x the per-image time of single images until this was
set, 0.75 x since. A server process gets ``SHARED_ARENA_ENVIRONMENT`` too, so that it holds
from its first thread on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
M_ARENA_MAX = -8
KEEP_FREED_BYTES = 2**31 - 1  # the largest trim threshold mallopt takes: never trim
TOP_PAD_BYTES = 64 * 2**20  # grow the heap in steps of this much (fewer brk calls)
SHARED_ARENA_ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}  # read by glibc when a process starts


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (process-wide, idempotent); False
    where malloc is not glibc's."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    applied = all(libc.mallopt(option, value) == 1 for option, value in (
        (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_FREED_BYTES), (M_TOP_PAD, TOP_PAD_BYTES),
        (M_ARENA_MAX, 1)))
    if not applied:
        logger.warning("mallopt refused a setting: tensors may be page-faulted in anew")
    return applied
