"""Freed memory is kept for reuse: a large block freed by one forward pass is handed to the
next without being page-faulted in again, in the main thread and in a server's worker thread.

Each case runs in a fresh interpreter (malloc's settings are process-wide). The control cases,
without ``keep_freed_memory``, show that the probe sees the faults it is meant to catch.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from carsdepo_assets.state import PROJECT_ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

BLOCK_PAGES = 80 * 2**20 // 4096  # 80 MiB: over a thread arena's 64 MiB heap cap
PROBE = f"""
import ctypes, ctypes.util, resource, sys, threading
if sys.argv[1] == "kept":
    from carsdepo_assets.detection.memory import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def passes():  # a forward pass's largest block: allocated, written, freed, again and again
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc({BLOCK_PAGES * 4096})
        ctypes.memset(block, 1, {BLOCK_PAGES * 4096})
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
if sys.argv[2] == "main":
    passes()
else:
    worker = threading.Thread(target=passes)
    worker.start()
    worker.join()
print(sum(faults[4:]))  # the last four passes, once the heap has settled
"""


def page_faults_of_later_passes(malloc: str, thread: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, malloc, thread], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_a_freed_large_block_is_reused_without_page_faults(thread):
    assert page_faults_of_later_passes("kept", thread) < BLOCK_PAGES // 10


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_control_by_default_every_large_block_is_page_faulted_anew(thread):
    assert page_faults_of_later_passes("default", thread) >= 4 * BLOCK_PAGES * 0.9
