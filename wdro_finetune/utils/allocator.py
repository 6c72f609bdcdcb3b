"""CPU allocator tuning for the console script.

With glibc's default malloc, a loop that frees a batch's activations and allocates the next batch's
(W-PGD over the whole data set, one forward + backward per batch per step) hands the memory back to the
OS after each batch and page-faults it in again; that system time grows with N (benchmarks/RESULTS.md).
Keeping up to 1 GiB of freed heap and serving requests up to 32 MiB from it removes the faults.
Set ``WDRO_MALLOC=default`` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 1 << 30  # bytes of freed heap kept instead of returned to the OS
MMAP_THRESHOLD = 32 << 20  # bytes; larger blocks are mmap'ed (returned at once when freed)


def keep_freed_memory() -> bool:
    """Apply the tuning on Linux with glibc (True when applied); a no-op elsewhere or with WDRO_MALLOC=default."""
    if os.environ.get("WDRO_MALLOC", "tuned") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    applied = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not applied:
        log.debug("mallopt refused the allocator tuning")
    return applied
