"""Blobs as files under a root folder, written crash-safely.

A blob is first written to ``.tmp/`` and fsynced, then linked to its final name
(``link`` fails if the name exists, which keeps keys immutable), and the folder is
fsynced so the new name survives power loss. A crash leaves at most a temp file,
which :meth:`FilesystemBlobStore.sweep_incomplete` removes after a grace period.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from medvault.kit.private_files import make_private_dirs
from medvault.kit.writeback import start_writeback
from medvault.storage.base import BlobExists, BlobInfo, BlobNotFound, BlobStoreError

READ_CHUNK = 1024 * 1024
TEMP_DIR = ".tmp"
# While a blob is written, queue its write-back to disk every this many bytes
# (kit.writeback): the fsync at commit then finds little left to write.
WRITEBACK_BYTES = 8 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_stem(key: str) -> str:
    return quote(key, safe="")


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    if parts[0] == TEMP_DIR:
        raise ValueError("blob keys may not start with the temp folder")


class FilesystemBlobWriter:
    def __init__(self, store: FilesystemBlobStore, key: str) -> None:
        self._store = store
        self._final = store.path_for(key)
        self._key = key
        # The key is in the name so that a sweep can find one key's leftovers (prefix).
        self._tmp = store.root / TEMP_DIR / f"{_temp_stem(key)}.{secrets.token_hex(8)}.part"
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._done = False
        self._written = 0
        self._writeback_from = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view) or 0
            self._written += written
            view = view[written:]
        if self._written - self._writeback_from >= WRITEBACK_BYTES:
            start_writeback(
                self._file.fileno(), self._writeback_from, self._written - self._writeback_from
            )
            self._writeback_from = self._written

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        parent = self._final.parent
        created = not parent.exists()
        make_private_dirs(parent)
        try:
            os.link(self._tmp, self._final)
        except FileExistsError:
            raise BlobExists(self._key) from None
        finally:
            self._tmp.unlink(missing_ok=True)
        _fsync_dir(parent)
        if created:
            # New directories must be durable in their parents too, up to the root.
            node = parent
            while node != self._store.root:
                node = node.parent
                _fsync_dir(node)
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        make_private_dirs(self.root / TEMP_DIR)

    def path_for(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def writer(self, key: str) -> FilesystemBlobWriter:
        if self.path_for(key).exists():
            raise BlobExists(key)
        return FilesystemBlobWriter(self, key)

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            handle = self.path_for(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return self._read_from(handle, offset, length)

    @staticmethod
    def _read_from(handle: BinaryIO, offset: int, length: int | None) -> Iterator[bytes]:
        with handle:
            handle.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = handle.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def list_blobs(self, prefix: str = "") -> Iterator[BlobInfo]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d != TEMP_DIR or Path(dirpath) != self.root)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    yield BlobInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))

    def sweep_incomplete(
        self, *, older_than_seconds: float, dry_run: bool = False, prefix: str = ""
    ) -> int:
        """Delete temp files left by crashed writers; returns how many were removed."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        try:
            leftovers = list((self.root / TEMP_DIR).iterdir())
        except FileNotFoundError:
            return 0  # readiness reports a missing blob folder; start-up must not crash on it
        stem = _temp_stem(prefix)
        for path in leftovers:
            if not path.name.startswith(stem):
                continue
            try:
                if path.stat().st_mtime < cutoff:
                    if not dry_run:
                        path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another instance swept it first
        return removed

    def check(self) -> None:
        probe = self.root / TEMP_DIR / f"ready-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise BlobStoreError(f"blob folder not writable: {exc.strerror}") from None

    def describe(self) -> str:
        return f"filesystem:{self.root}"
