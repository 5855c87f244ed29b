"""``manifest.json``: what a backup holds, each file with its size and SHA-256.

The manifest is written last, and the backup directory gets its final name only
after that (see :mod:`.service`), so a directory with a manifest is a complete backup.
Everything a restore reads from a manifest is untrusted input: blob keys are checked
to be plain relative paths before any of them becomes a file name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

FORMAT: Final = "medvault-backup"
FORMAT_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
BLOB_DIR: Final = "blobs"
DATABASE_DIR: Final = "databases"
CHUNK: Final = 1024 * 1024

Engine = Literal["sqlite", "postgresql"]
DatabaseRole = Literal["clinical", "auth", "patients"]
# Dumped in this order: see service.take_backup for why clinical comes first.
DATABASE_ROLES: Final[tuple[DatabaseRole, ...]] = ("clinical", "auth", "patients")
# Backups from before the patient database (c0014) have no "patients" dump: their
# clinical dump holds the patients, which `medvault migrate` moves after a restore.
OPTIONAL_ROLES: Final[frozenset[str]] = frozenset({"patients"})


class ManifestError(ValueError):
    """The manifest is missing, unreadable, of another format, or names unsafe paths."""


@dataclass(frozen=True)
class DatabaseEntry:
    engine: Engine
    file: str
    """Relative to the backup directory."""
    size: int
    sha256: str
    alembic_revision: str | None
    source: str
    """The database URL without its password, for the operator's eyes only."""


@dataclass(frozen=True)
class BlobEntry:
    key: str
    size: int
    sha256: str
    """Of the stored (encrypted) bytes, exactly as the blob store holds them."""


@dataclass(frozen=True)
class CheckpointEntry:
    tree_size: int
    root_hash: str
    """Base64, as in the signed note."""
    key_id: str
    signed_note: str
    """The witness-file text (note, blank line, signature): the authority; the fields
    above are there for people reading the manifest."""


@dataclass
class BlobStats:
    count: int = 0
    bytes: int = 0
    copied: int = 0
    """Read from the blob store into this backup."""
    linked: int = 0
    """Hard-linked from the base backup (immutable blobs it already held)."""
    vanished: int = 0
    """Listed, then deleted before they could be read (see service.take_backup)."""


@dataclass
class Manifest:
    backup_id: str
    created_at: str
    completed_at: str
    medvault_version: str
    storage: str
    databases: dict[str, DatabaseEntry]
    blobs: list[BlobEntry]
    blob_stats: BlobStats
    audit_checkpoint: CheckpointEntry | None
    base_backup: str | None = None
    """Name of the backup whose blobs were hard-linked, or None for a full backup."""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False) + "\n"

    def files(self) -> Iterator[tuple[str, int, str]]:
        """Every file the backup must hold: (relative path, size, SHA-256)."""
        for entry in self.databases.values():
            yield entry.file, entry.size, entry.sha256
        for blob in self.blobs:
            yield blob_path(blob.key), blob.size, blob.sha256


def blob_path(key: str) -> str:
    """Where a blob lives inside a backup, relative to it; refuses unsafe keys."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"unsafe blob key in manifest: {key!r}")
    return f"{BLOB_DIR}/{key}"


def database_file(role: str, engine: Engine) -> str:
    """Where a database dump lives inside a backup: a SQLite file, or pg_dump's custom format."""
    return f"{DATABASE_DIR}/{role}.{'sqlite' if engine == 'sqlite' else 'pgdump'}"


def _entry(cls: type[Any], raw: Any, what: str) -> Any:
    if not isinstance(raw, dict):
        raise ManifestError(f"{what} is not an object")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ManifestError(f"{what}: {exc}") from None


def read_manifest(backup_dir: Path) -> Manifest:
    """Load and check ``backup_dir/manifest.json``; raises :class:`ManifestError`."""
    path = backup_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: not a (complete) medvault backup") from None
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path} is unreadable: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a medvault backup manifest")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path} has format version {raw.get('format_version')!r}; "
            f"this medvault reads version {FORMAT_VERSION}"
        )
    try:
        databases: dict[str, DatabaseEntry] = {
            role: _entry(DatabaseEntry, raw["databases"][role], f"database {role}")
            for role in DATABASE_ROLES
            if role in raw["databases"] or role not in OPTIONAL_ROLES
        }
        blobs = [_entry(BlobEntry, item, "blob entry") for item in raw["blobs"]]
        checkpoint = raw["audit_checkpoint"]
        manifest = Manifest(
            backup_id=raw["backup_id"],
            created_at=raw["created_at"],
            completed_at=raw["completed_at"],
            medvault_version=raw["medvault_version"],
            storage=raw["storage"],
            databases=databases,
            blobs=blobs,
            blob_stats=_entry(BlobStats, raw["blob_stats"], "blob_stats"),
            audit_checkpoint=None
            if checkpoint is None
            else _entry(CheckpointEntry, checkpoint, "audit_checkpoint"),
            base_backup=raw.get("base_backup"),
            notes=list(raw.get("notes", [])),
        )
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{path} lacks {exc}") from None
    for role, entry in databases.items():
        if entry.engine not in ("sqlite", "postgresql") or entry.file != database_file(
            role, entry.engine
        ):
            raise ManifestError(f"unexpected database file in manifest: {entry.file!r}")
    for blob in blobs:
        blob_path(blob.key)
    return manifest


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in chunks (dumps can be larger than memory)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
