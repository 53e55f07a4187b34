"""Process settings for answering with a detector on CPU, applied once per process.

Two costs that are not the model's own (measured in ``benchmarks/bench_paths.py``):

- glibc's ``malloc`` hands large freed blocks back to the kernel, so every forward pass
  page-faulted its activations in anew; freed memory is now kept (``detection.memory``).
- torch's thread count is set once, to the cores this process may use, rather than around
  each call; requests of a server are answered one at a time (``prediction.pyfunc``), so its
  web threads never multiply torch's.
"""

from __future__ import annotations

import threading

from carsdepo_assets.detection.memory import keep_freed_memory
from carsdepo_assets.detection.threads import usable_cores

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
            import torch  # here: the Dagster code location imports this module, not torch

            torch.set_num_threads(_threads)
        return _threads

