"""Write-back queued while a blob is written (kit.writeback, storage.filesystem)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from medvault.kit import writeback
from medvault.storage import filesystem
from medvault.storage.filesystem import WRITEBACK_BYTES, FilesystemBlobStore

MiB = 1024 * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's")
def test_the_real_syscall_is_called() -> None:
    assert writeback.supported()
    # A closed descriptor is refused by the kernel itself: the call really happens.
    read_end, write_end = os.pipe()
    os.close(write_end)
    os.close(read_end)
    with pytest.raises(OSError) as refused:
        writeback.start_writeback(write_end, 0, MiB)
    assert refused.value.errno == errno.EBADF


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's")
def test_a_file_without_write_back_is_not_an_error() -> None:
    # A pipe has no pages to write back (ESPIPE): the fsync at commit does the job.
    read_end, write_end = os.pipe()
    try:
        writeback.start_writeback(write_end, 0, MiB)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_blob_queues_its_write_back_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[tuple[int, int]] = []
    synced: list[int] = []
    real_start, real_fsync = writeback.start_writeback, os.fsync

    def start(fd: int, offset: int, length: int) -> None:
        queued.append((offset, length))
        real_start(fd, offset, length)

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(filesystem, "start_writeback", start)
    monkeypatch.setattr(os, "fsync", fsync)
    store = FilesystemBlobStore(tmp_path / "blobs")
    piece = os.urandom(MiB + 7)  # odd sizes: ranges follow the bytes, not the calls
    pieces = 2 * WRITEBACK_BYTES // len(piece) + 3
    writer = store.writer("a/blob")
    for _ in range(pieces):
        writer.write(piece)
    assert not synced, "nothing is fsynced before commit"
    writer.commit()

    # Whole pieces until WRITEBACK_BYTES are pending, then one range: contiguous from 0.
    per_range = -(-WRITEBACK_BYTES // len(piece)) * len(piece)
    ranges = pieces * len(piece) // per_range
    assert ranges >= 2
    assert queued == [(n * per_range, per_range) for n in range(ranges)]
    # Durability is still the fsync's: the file, then its folder.
    assert len(synced) >= 2
    assert (tmp_path / "blobs" / "a" / "blob").read_bytes() == piece * pieces
