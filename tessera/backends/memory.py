"""``malloc``: freed large blocks kept for the next tensor instead of returned to the system.

PyTorch's CPU tensors come from the C allocator. glibc serves a block above its mmap
threshold (which it lets grow to 32 MiB at most) with a fresh ``mmap`` and unmaps it when
it is freed, so the next tensor of that size faults in new zeroed pages one by one. A
transformer makes and frees the same large tensors in every forward pass: at batch 8, the
hidden layer of swin_t's stage-1 MLP is 38.5 MB, and its oneDNN product with GELU takes
16 ms that way against 5 ms when the freed block is reused (Zen 4 kind, 2 threads).

:func:`keep_freed_blocks` raises glibc's mmap and trim thresholds (``mallopt``), so that
large blocks come from the heap and stay there when freed. The cost: the process keeps the
memory of its largest moment reserved, as a GPU caching allocator does. It is done once, the
first time the backends choose an implementation (not under ``use("reference")``), and not
at all where the setting excludes ``malloc`` (``TESSERA_BACKEND=auto,-malloc``) or the C
library is not glibc. Nothing is computed differently: only where the memory comes from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import threading

logger = logging.getLogger(__name__)

NAME = "malloc"
#: blocks up to this size come from the heap (glibc's own ceiling for its moving threshold is 32 MiB)
MMAP_THRESHOLD = 1 << 30
#: free memory at the top of the heap is returned to the system only beyond this
TRIM_THRESHOLD = 1 << 31
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)

_lock = threading.Lock()
_state: str | None = None  # what was done: None until the first call


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_blocks() -> str:
    """Raise glibc's thresholds once (see the module docstring); returns what was done, as
    :func:`state` does."""
    global _state
    with _lock:
        if _state is None:
            libc = _glibc()
            if libc is None:
                _state = f"left as it is: the C library is {platform.libc_ver()[0] or 'not glibc'}"
            elif libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD):
                _state = f"glibc keeps freed blocks up to {MMAP_THRESHOLD >> 20} MiB for reuse"
                logger.debug("malloc: %s", _state)
            else:
                _state = "left as it is: glibc refused the thresholds"
        return _state


def state() -> str:
    """What was done to the C allocator so far, in words."""
    return _state or "not changed (the backends have not chosen anything yet, or malloc is excluded)"
