"""Copy blobs between a BlobStore and a backup directory, streaming and in parallel.

Blobs are immutable under their keys (storage.base), which is what makes incremental
backups simple: a key that the base backup holds with the same size is the same
bytes, so it is hard-linked from there instead of read from the store again.

Why hard links rather than references to the older backup: every backup directory
stays complete on its own, so any one can be restored, verified, copied or deleted
without the others. Deleting an old backup frees exactly the blobs no newer backup
still holds, which is what a retention policy needs (a destroyed record's blob
leaves the backups when the last one taken before its destruction is deleted); with
references, deleting the oldest backup would break every later one. The cost: links
need the base backup on the same filesystem (otherwise the blob is copied from the
store again), and linked backups share one inode per blob, so damage to one copy is
damage to all of them; ``--full`` now and then starts a fresh, independent chain.

Reads and writes go through the store's streaming API one chunk at a time: no blob
is ever held whole in memory. A handful of threads overlap the round trips, which
is what limits S3 throughput.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from medvault.governance.backup.manifest import CHUNK, BlobEntry, blob_path
from medvault.kit.private_files import PRIVATE_FILE_MODE, make_private_dirs
from medvault.storage.base import BlobInfo, BlobNotFound, BlobStore, BlobWriter

DEFAULT_PARALLEL = 8


class BlobMismatch(RuntimeError):
    """A backed-up blob's bytes are not the ones its manifest entry describes."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Copied:
    entry: BlobEntry | None
    """None when the blob vanished between listing and reading."""
    linked: bool = False


class BackupBlobs:
    """Writes blobs into ``backup_dir/blobs/<key>``, linking what ``base`` already holds."""

    def __init__(
        self,
        store: BlobStore,
        backup_dir: Path,
        *,
        base_dir: Path | None = None,
        base_entries: dict[str, BlobEntry] | None = None,
    ) -> None:
        self._store = store
        self._dir = backup_dir
        self._base_dir = base_dir
        self._base = base_entries or {}

    def _link(self, blob: BlobInfo, target: Path) -> BlobEntry | None:
        known = self._base.get(blob.key)
        if known is None or known.size != blob.size or self._base_dir is None:
            return None
        source = self._base_dir / blob_path(blob.key)
        try:
            if source.stat().st_size != known.size:
                return None
            os.link(source, target)
        except FileNotFoundError:
            return None  # the base backup lost it: read it from the store again
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                return None  # another filesystem, or links refused: copy instead
            raise
        return known

    def copy(self, blob: BlobInfo) -> Copied:
        """Back up one listed blob: link it from the base backup, else stream it from the store."""
        target = self._dir / blob_path(blob.key)
        make_private_dirs(target.parent)
        linked = self._link(blob, target)
        if linked is not None:
            return Copied(linked, linked=True)
        partial = target.with_name(f".{target.name}.partial")
        digest = hashlib.sha256()
        size = 0
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._store.read(blob.key):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            partial.replace(target)
        except BlobNotFound:
            # Deleted after it was listed (a finished resumable upload's chunks, a
            # destroyed version): nothing committed at dump time can need it.
            partial.unlink(missing_ok=True)
            return Copied(None)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return Copied(BlobEntry(blob.key, size, digest.hexdigest()))


def check_file(backup_dir: Path, relative: str, size: int, sha256: str) -> str | None:
    """Why ``relative`` does not match its manifest entry, or None if it does."""
    path = backup_dir / relative
    digest = hashlib.sha256()
    seen = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                seen += len(chunk)
    except FileNotFoundError:
        return "missing"
    if seen != size:
        return f"size {seen} bytes, manifest says {size}"
    if digest.hexdigest() != sha256:
        return "SHA-256 does not match the manifest"
    return None


def restore_blob(store: BlobStore, backup_dir: Path, entry: BlobEntry) -> None:
    """Stream one blob into the store, committing only if its SHA-256 still matches.

    The restore checked every file before it began; this second look costs nothing
    (the bytes pass anyway) and catches a file changed since.
    """
    relative = blob_path(entry.key)
    writer: BlobWriter = store.writer(entry.key)
    digest = hashlib.sha256()
    try:
        with (backup_dir / relative).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise BlobMismatch(relative, "SHA-256 changed during the restore")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
