"""Process-level runtime setting for CPU work: keep freed heap memory in the process for reuse (glibc malloc).

glibc's malloc serves every block above its mmap threshold (128 KiB, adapted up to at most 32 MiB) with a fresh
``mmap`` and hands it back with ``munmap`` on free, and trims the heap top once more than the trim threshold is
free. A network's activations are such blocks, so every forward and backward pass page-faults its activations in
again, and the kernel zero-fills each page. On this project's 2-core VM that was most of the time of a large-batch
evaluation (``bench/allocator.py``): the smallest OFA-MobileNetV3 subnet at 160 px, batch 200, took 2.19 s per
forward with 1.24 million minor page faults, and 0.66 s with none once mmap and trimming were off; a batch-16
training step went from 0.228 to 0.204 s. Peak RSS rose by 26% (smallest) and 41% (largest subnet). PyTorch's
CPU launcher (``torch.backends.xeon.run_cpu``) gets the same effect by preloading jemalloc or tcmalloc;
:func:`retain_freed_memory` does it in-process with ``mallopt(3)``.

The trade-off is the one a caching allocator makes (PyTorch's CUDA allocator does it for GPU memory): the process
keeps its peak heap and reuses it instead of returning freed memory to the operating system. The setting is
process-wide and stays on, so no library function calls this: each command's ``__main__`` applies the ``runtime``
config group (``runtime.retain_memory``, default true; :func:`nas.commands.apply_runtime`), and that config key is
the one switch (no environment variable is read). A no-op off Linux/glibc.
"""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["retain_freed_memory", "retaining_freed_memory", "supported"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc malloc.h
_INT_MAX = 2**31 - 1
_active = False


def supported() -> bool:
    """Whether this process runs on Linux with glibc, whose malloc the setting tunes."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def retaining_freed_memory() -> bool:
    """Whether :func:`retain_freed_memory` is in effect in this process."""
    return _active


def retain_freed_memory(enabled: bool = True) -> bool:
    """Serve large blocks from the reusable heap (no per-block mmap) and never trim it; True if now in effect.

    Returns False without changing anything when ``enabled`` is false (and it is not already on), or off
    Linux/glibc. Idempotent.
    """
    global _active
    if _active:
        return True
    if not enabled or not supported():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _active = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    return _active
