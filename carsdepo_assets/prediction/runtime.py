"""Process settings for answering with a detector on CPU, applied once per process.

Two costs that are not the model's own (measured in ``benchmarks/bench_paths.py``):

- glibc's ``malloc`` serves blocks above its mmap threshold (at most 32 MiB) with fresh pages
  and gives them back to the kernel on free, and trims the heap when its top is free. A forward
  pass allocates activations of that size layer after layer, so each one was page-faulted in
  anew: on 2 cores a batch of 8 ran at a third of the speed of the same pass with the memory
  kept (15 million page faults in 40 s). Here freed memory stays in the heap for the next
  tensor. Resident memory then stays at the process's peak instead of dropping between
  batches, and the peak itself does not change.
- torch's thread count is set once, to the cores this process may use, rather than around
  each call; requests of a server are answered one at a time (``prediction.pyfunc``), so its
  web threads never multiply torch's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import threading

import torch

from carsdepo_assets.detection.threads import usable_cores

logger = logging.getLogger(__name__)

# mallopt(3) parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 2**31 - 1  # the largest trim threshold mallopt takes: never trim
TOP_PAD_BYTES = 64 * 2**20  # grow the heap in steps of this much (fewer brk calls)

_lock = threading.Lock()
_threads: int | None = None


def prepare_inference_process(threads: int | None = None) -> int:
    """Apply the settings above (the first call in a process decides); return torch's thread
    count. ``threads`` defaults to the cores this process may run on."""
    global _threads
    with _lock:
        if _threads is None:
            keep_freed_memory()
            _threads = threads or usable_cores()
            torch.set_num_threads(_threads)
        return _threads


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; False where malloc is not glibc's."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    applied = all(libc.mallopt(option, value) == 1 for option, value in (
        (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, KEEP_FREED_BYTES), (M_TOP_PAD, TOP_PAD_BYTES)))
    if not applied:
        logger.warning("mallopt refused a setting: inference may page-fault its tensors anew")
    return applied
