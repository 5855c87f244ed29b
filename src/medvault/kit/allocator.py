"""Keep glibc from handing megabyte buffers back to the kernel after every use.

Streaming a document allocates and frees buffers of about 1 MiB over and over (a
download's joined plaintext pieces, a blob store's read chunks, HTTP receive buffers).
glibc serves a request that size with ``mmap`` and returns it with ``munmap`` when
freed, or, once its dynamic threshold has risen, trims an arena's top as soon as a
couple of megabytes there are free, so the next buffer's every page is faulted in (and
zeroed by the kernel) again. Worker threads, each with its own arena, hit the trim on
almost every batch. Measured with ``bench/large_files.py``
(server minor faults per 1 GiB transfer): ~190,000 on a download, against almost none
for the baseline's plain-file download, and ~250,000 on an upload before ``pump``
reused its own buffers. With the thresholds raised: ~3,600 per GiB downloaded.

Raising the thresholds keeps such buffers in the heap, where the next one reuses the
same, already-mapped pages. The cost is bounded: at most ``TRIM_THRESHOLD`` of freed
memory stays mapped per arena before it is returned. ``MALLOC_*`` environment
variables would do the same, but only when set before the process starts; the server
and worker call :func:`keep_buffers_mapped` once at start instead, so no deployment
has to remember them. On a libc other than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MiB = 1024 * 1024
# Allocations below this come from the heap. 32 MiB is glibc's own ceiling for its
# dynamic threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit), far above any buffer
# the streaming paths use.
MMAP_THRESHOLD = 32 * MiB
# Free memory at the top of the heap beyond this is returned to the kernel.
TRIM_THRESHOLD = 16 * MiB
# Extra memory requested whenever the heap grows, so growing is rare.
TOP_PAD = 4 * MiB


def keep_buffers_mapped() -> bool:
    """Apply the thresholds above to this process's glibc allocator; True if applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
    if not applied:
        logger.warning("glibc refused the allocator thresholds; streaming will fault more")
    return applied
