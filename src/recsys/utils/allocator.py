"""Keep freed tensor memory in the process (glibc), so that every training step does not fault it in again.

glibc's ``malloc`` serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB at start, adapting up to 32 MiB) with fresh
``mmap`` pages and returns them to the system when freed; the top of the heap is trimmed above
``M_TRIM_THRESHOLD``. A graph-model step allocates and frees several node tables of tens of MiB (propagation
results, gradients): with the defaults each one is faulted in page by page again on every step, which costs
as much as a sparse product (measured on Gowalla in docs/benchmarks.md: −20 % step time with the settings
below). Raising both thresholds keeps those blocks in the heap for reuse. Other C libraries: nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring); ``False`` where there is no glibc. A glibc that
    refuses an mmap threshold above 32 MiB (older releases) gets 32 MiB."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mmap_ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) or bool(mallopt(M_MMAP_THRESHOLD, 32 << 20))
    ok = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and mmap_ok
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d (%s)", MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES,
              "set" if ok else "refused")
    return ok
