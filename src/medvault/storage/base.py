"""The BlobStore protocol: where encrypted version blobs live.

Stores only ever see ciphertext. A key is written once: a writer makes the blob
durable under its final key on :meth:`BlobWriter.commit`, and nothing rewrites it
afterwards (key rotation re-wraps DEKs in the database, not blobs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

logger = logging.getLogger(__name__)


class BlobStoreError(Exception):
    """The store could not complete an operation."""


class BlobNotFound(BlobStoreError):
    """No blob under that key."""


class BlobExists(BlobStoreError):
    """A blob already exists under that key; keys are immutable."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime


class BlobWriter(Protocol):
    def write(self, data: bytes | memoryview) -> None:
        """Append ciphertext; may upload or flush part of it already.

        ``data`` is consumed before this returns: it may be a view of a buffer the
        caller reuses for the next write, so keep a copy, never the object.
        """

    def commit(self) -> None:
        """Make the blob durable under its final key. Afterwards it is readable."""

    def abort(self) -> None:
        """Discard everything written; safe to call after a failed commit, and twice."""


class BlobStore(Protocol):
    def writer(self, key: str) -> BlobWriter:
        """Start writing a new blob under ``key``."""

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream ``length`` bytes (all to the end if None) starting at ``offset``."""

    def delete(self, key: str) -> None:
        """Remove a blob; missing keys are not an error."""

    def exists(self, key: str) -> bool: ...

    def list_blobs(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every committed blob under ``prefix`` (for reconciling against the database)."""

    def sweep_incomplete(
        self, *, older_than_seconds: float, dry_run: bool = False, prefix: str = ""
    ) -> int:
        """Discard writes that never committed (crashed writers) older than this.

        Temp files on a filesystem, incomplete multipart uploads on S3; only those of
        keys under ``prefix`` when one is given. Returns how many (with ``dry_run``, how
        many it would discard, touching nothing).
        """

    def check(self) -> None:
        """Raise :class:`BlobStoreError` unless the store is reachable and writable."""

    def describe(self) -> str:
        """A human description for logs, without credentials."""


def discard(store: BlobStore, keys: Iterable[str], *, finisher: str) -> int:
    """Delete blobs whose rows are already gone (call it after the commit).

    A blob already missing is fine. One the store fails to delete is left to
    ``finisher`` (the sweep that removes unreferenced blobs), with a log line: the
    commit stands either way. Returns how many were deleted.
    """
    deleted = 0
    for key in keys:
        try:
            store.delete(key)
            deleted += 1
        except BlobNotFound:
            pass
        except BlobStoreError:
            logger.warning("could not delete blob %s now; %s will", key, finisher)
    return deleted
