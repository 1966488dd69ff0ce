"""Keep the memory of large tensors in the process between training steps.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a
fresh mmap and unmaps it on free. A wide net's activations are larger than that
(conv3-512's first layer output is 177 MB at batch 128), so each step maps them
anew and the kernel page-faults and zeroes every page again. `keep_large_blocks`
tells malloc to take all blocks from its heap (no mmap) and to keep up to
TRIM_BYTES of freed memory instead of returning it: the next step reuses the same
pages. The figures are in docs/benchmarks.md (benchmarks/allocator.py).

Linux with glibc only, once per process, at the start of training; elsewhere (or if
glibc refuses) it does nothing. CNNLAB_MALLOC=default leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_BYTES = 2**31 - 1  # mallopt takes an int: the largest it accepts
ENV_VAR = "CNNLAB_MALLOC"


@functools.cache
def keep_large_blocks() -> bool:
    """Turn off malloc's mmap of large blocks and its eager trimming; True when
    glibc accepted both settings."""
    if os.environ.get(ENV_VAR, "").strip().lower() == "default":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
