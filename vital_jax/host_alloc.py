"""Keep freed host memory in the process (glibc malloc), so big XLA CPU buffers are reused.

Why: on CPU, XLA allocates each executable's temporaries as one block per run (1.97 GB for the
61M benchmark model's train step) with ``malloc``. glibc serves blocks above its mmap threshold
with a fresh ``mmap`` and returns them with ``munmap``, so every step faults the whole block in
again: 2.2 GB, about 570k page faults and 1-3 s of kernel time per step on this 2-core machine
(measured: fwd+bwd 3.9 s -> 3.2 s, minor faults 568k -> 20k with the setting below). TCMalloc,
which many JAX deployments preload, behaves like the tuned glibc.

:func:`keep_freed_memory` sets ``M_MMAP_MAX = 0`` (large blocks come from the heap) and a
``M_TRIM_THRESHOLD = -1`` (freed heap memory is not handed back), the same as
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...`` at start-up. The
price: the process keeps its peak host memory until it exits, which is what a training or
evaluation process wants. The ``vital`` command, the benchmarks and the tests call it; library
users call it themselves. ``VITAL_KEEP_FREED_MEMORY=0`` turns it off. A no-op where the C
library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the malloc settings once per process; True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("VITAL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; a trim threshold of -1 disables trimming (mallopt(3))
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
    return _applied
