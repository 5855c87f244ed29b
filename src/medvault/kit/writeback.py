"""Start the kernel writing a file's dirty pages to disk, without waiting for it.

A blob is fsynced before its upload is acknowledged. Left alone, Linux keeps a large
upload's pages dirty in memory until that fsync (its background write-back starts
only at ``dirty_background_ratio``, gigabytes on a server), so the disk sits idle
while the body arrives and then writes the whole file while the client waits: about
a fifth of a 1 GiB upload's time on the reference machine. ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE`` queues the write-back of a range and returns, so the disk
works while the network does. It is a hint: durability still comes from the fsync.

Python's ``os`` module has no ``sync_file_range`` and no maintained package wraps it,
so this calls libc through ctypes (the one syscall, with its documented signature).
``posix_fadvise(POSIX_FADV_DONTNEED)`` also starts write-back on Linux, but it then
tries to drop the range from the page cache (draining every CPU's LRU lists when the
pages are still dirty) and measured slower. Where the call does not exist (not Linux),
:func:`start_writeback` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable

# <linux/fs.h>: start write-out of dirty pages in the range, do not wait.
SYNC_FILE_RANGE_WRITE = 2
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESPIPE})


def _load() -> Callable[[int, int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE = _load()


def supported() -> bool:
    return _SYNC_FILE_RANGE is not None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Queue write-back of ``length`` bytes at ``offset`` of ``fd``; returns at once."""
    if _SYNC_FILE_RANGE is None or length <= 0:
        return
    if _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0:
        return
    code = ctypes.get_errno()
    # A file system without it (some FUSE and network mounts) loses only the head start:
    # the fsync at commit still does the whole job. Anything else (EIO, EBADF) is real.
    if code not in _UNSUPPORTED:
        raise OSError(code, os.strerror(code))
