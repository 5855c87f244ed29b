"""Take a backup, check one, and restore one into an empty vault.

**Order of a backup: databases first, then blobs.** An upload makes its blob durable
before the transaction that adds its rows commits (ARCHITECTURE.md, "Upload"), and
blobs are never rewritten. So every row in a database dump points at a blob that
already existed when the dump began, and the blob listing taken *after* the dump
finds it. The other order would miss the blob of any upload that committed between
the two steps: a restored row without its bytes. Blobs written after the dump are
copied too and come back as orphans, which the reconciler removes after its grace
period. A blob deleted between dump and copy (a finished resumable upload's chunks,
a version destroyed meanwhile) is counted as vanished: a restore of that backup
shows the destroyed version as missing, which ``verify --all`` reports.

The clinical database is dumped before the auth database: clinical rows name users
(care teams, audit actors), so a user created between the two dumps is at worst a
user nobody references yet, never a reference to a user the backup lacks.

**Order of a restore: blobs first, then databases**, for the same reason as an
upload: a restore that dies part-way leaves blobs without rows, never rows without
blobs. Before anything is written the restore refuses a target that holds data and
a backup whose files do not match their manifest, so a refusal changes nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

from medvault import __version__
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.config import Settings
from medvault.db.engine import Database
from medvault.governance.backup import databases
from medvault.governance.backup.blob_copy import (
    DEFAULT_PARALLEL,
    BackupBlobs,
    check_file,
    restore_blob,
)
from medvault.governance.backup.manifest import (
    DATABASE_ROLES,
    MANIFEST_NAME,
    BlobEntry,
    BlobStats,
    DatabaseEntry,
    DatabaseRole,
    Manifest,
    ManifestError,
    database_file,
    read_manifest,
    sha256_file,
)
from medvault.governance.backup.proof import latest_checkpoint
from medvault.kit.parallel import run_parallel
from medvault.kit.private_files import make_private_dirs, write_private_file
from medvault.runtime import open_configured_store
from medvault.storage.base import BlobStore

_NAME = re.compile(r"^\d{8}T\d{6}Z(-[0-9a-f]{4})?$")


class BackupError(RuntimeError):
    """A backup or restore could not be done; nothing was left half-written."""


class RestoreRefused(BackupError):
    """The target is not empty or the backup does not match its manifest; nothing changed."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


class Observer:
    """Progress of a long operation; the CLI draws it, tests may record it."""

    def stage(self, name: str, total: int | None = None) -> None:
        """A new step begins (``databases``, ``blobs``, ``check``, ``restore blobs``...)."""

    def advance(self, amount: int = 1) -> None:
        """One more item of the current step is done."""


SILENT: Final = Observer()


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest


def _database_urls(settings: Settings) -> dict[DatabaseRole, str]:
    return {
        "clinical": settings.clinical_database_url,
        "auth": settings.auth_db_url,
        "patients": settings.patient_db_url,
    }


def open_store(settings: Settings) -> BlobStore:
    return open_configured_store(settings)


def complete_backups(destination: Path) -> list[Path]:
    """Backups in ``destination`` that finished (they have a manifest), oldest first."""
    if not destination.is_dir():
        return []
    found = [
        entry
        for entry in destination.iterdir()
        if _NAME.match(entry.name) and (entry / MANIFEST_NAME).is_file()
    ]
    return sorted(found, key=lambda entry: entry.name)


def _new_name(destination: Path, now: datetime) -> str:
    name = now.strftime("%Y%m%dT%H%M%SZ")
    if (destination / name).exists() or (destination / f".{name}.partial").exists():
        name = f"{name}-{secrets.token_hex(2)}"
    return name


def _dump(role: DatabaseRole, url: str, backup_dir: Path) -> DatabaseEntry:
    engine = databases.engine_of(url)
    relative = database_file(role, engine)
    target = backup_dir / relative
    if engine == "postgresql":
        revision = databases.revision(url)  # before the dump: a migration is not running
    databases.dump(url, target)
    if engine == "sqlite":
        revision = databases.revision(f"sqlite:///{target}")  # exactly what was copied
    size, digest = sha256_file(target)
    return DatabaseEntry(engine, relative, size, digest, revision, _redacted(url))


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _base_entries(base: Path | None) -> dict[str, BlobEntry]:
    if base is None:
        return {}
    try:
        manifest = read_manifest(base)
    except ManifestError as exc:
        raise BackupError(f"cannot build on {base}: {exc}") from None
    return {entry.key: entry for entry in manifest.blobs}


def take_backup(
    *,
    settings: Settings,
    destination: Path,
    base: Path | None,
    parallel: int = DEFAULT_PARALLEL,
    observer: Observer = SILENT,
    context: AuditContext | None = None,
) -> BackupResult:
    """Back up the three databases and every blob into a new directory under ``destination``.

    Blobs that ``base`` (an earlier backup) holds are hard-linked from it, not read
    again. Needs no key material: the host that runs backups need not hold the keys.
    """
    urls = _database_urls(settings)
    for url in urls.values():
        if databases.engine_of(url) == "sqlite" and not databases.sqlite_path(url).is_file():
            raise BackupError(f"no vault database at {databases.sqlite_path(url)}")
    base_entries = _base_entries(base)
    store = open_store(settings)
    clinical = Database(urls["clinical"])
    destination = destination.expanduser().resolve()
    make_private_dirs(destination)
    started = datetime.now(UTC)
    name = _new_name(destination, started)
    partial = destination / f".{name}.partial"
    make_private_dirs(partial)
    try:
        checkpoint = latest_checkpoint(clinical)  # before the dump: see proof.py
        observer.stage("databases", len(urls))
        dumps: dict[str, DatabaseEntry] = {}
        for role in DATABASE_ROLES:
            dumps[role] = _dump(role, urls[role], partial)
            observer.advance()
        blobs, stats = _backup_blobs(store, partial, base, base_entries, parallel, observer)
        manifest = Manifest(
            backup_id=str(uuid.uuid4()),
            created_at=started.isoformat(),
            completed_at=datetime.now(UTC).isoformat(),
            medvault_version=__version__,
            storage=store.describe(),
            databases=dumps,
            blobs=blobs,
            blob_stats=stats,
            audit_checkpoint=checkpoint,
            base_backup=None if base is None else base.name,
        )
        # Everything on disk before the manifest says the backup is complete.
        os.sync()
        write_private_file(partial / MANIFEST_NAME, manifest.to_json().encode(), exclusive=True)
        final = destination / name
        partial.rename(final)
        fd = os.open(destination, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        clinical.dispose()
        raise
    try:
        _record(clinical, context, "backup.create", manifest)
    finally:
        clinical.dispose()
    return BackupResult(final, manifest)


def _backup_blobs(
    store: BlobStore,
    backup_dir: Path,
    base: Path | None,
    base_entries: dict[str, BlobEntry],
    parallel: int,
    observer: Observer,
) -> tuple[list[BlobEntry], BlobStats]:
    observer.stage("blobs")
    copier = BackupBlobs(store, backup_dir, base_dir=base, base_entries=base_entries)
    entries: list[BlobEntry] = []
    stats = BlobStats()
    for copied in run_parallel(copier.copy, store.list_blobs(), parallel=parallel):
        observer.advance()
        if copied.entry is None:
            stats.vanished += 1
            continue
        entries.append(copied.entry)
        stats.count += 1
        stats.bytes += copied.entry.size
        if copied.linked:
            stats.linked += 1
        else:
            stats.copied += 1
    entries.sort(key=lambda entry: entry.key)
    return entries, stats


def _record(
    clinical: Database, context: AuditContext | None, action: str, manifest: Manifest
) -> None:
    """Audit the backup in the live vault (after the dump, so not inside the backup)."""
    with clinical.session() as session:
        audit.record(
            session=session,
            context=context or AuditContext.system("backup"),
            action=action,
            resource_type="Backup",
            resource_id=manifest.backup_id,
            details={
                "blobs": manifest.blob_stats.count,
                "copied": manifest.blob_stats.copied,
                "linked": manifest.blob_stats.linked,
                "audit_tree_size": None
                if manifest.audit_checkpoint is None
                else manifest.audit_checkpoint.tree_size,
            },
        )
        session.commit()


def check_backup(
    backup_dir: Path,
    *,
    manifest: Manifest | None = None,
    parallel: int = DEFAULT_PARALLEL,
    observer: Observer = SILENT,
) -> list[str]:
    """Every file of the backup against its manifest; returns one line per bad file."""
    manifest = manifest or read_manifest(backup_dir)
    files = list(manifest.files())
    observer.stage("check", len(files))

    def check(item: tuple[str, int, str]) -> str | None:
        relative, size, digest = item
        reason = check_file(backup_dir, relative, size, digest)
        return None if reason is None else f"{backup_dir / relative}: {reason}"

    problems: list[str] = []
    for problem in run_parallel(check, files, parallel=parallel):
        observer.advance()
        if problem is not None:
            problems.append(problem)
    return sorted(problems)


def _occupied(settings: Settings, manifest: Manifest, store: BlobStore) -> list[str]:
    reasons: list[str] = []
    for role, url in _database_urls(settings).items():
        if role not in manifest.databases:
            # A backup from before the patient database: the target's must be empty
            # for `medvault migrate` to move the patients into it.
            why = databases.occupied(url)
            if why is not None:
                reasons.append(f"the target {role} database is not empty: {why}")
            continue
        wanted = manifest.databases[role].engine
        if databases.engine_of(url) != wanted:
            reasons.append(
                f"the backup's {role} database is {wanted}, the target is "
                f"{databases.engine_of(url)}"
            )
            continue
        why = databases.occupied(url)
        if why is not None:
            reasons.append(f"the target {role} database is not empty: {why}")
    first = next(iter(store.list_blobs()), None)
    if first is not None:
        reasons.append(f"the target blob store {store.describe()} is not empty: {first.key}")
    return reasons


def restore_backup(
    *,
    settings: Settings,
    backup_dir: Path,
    parallel: int = DEFAULT_PARALLEL,
    observer: Observer = SILENT,
) -> Manifest:
    """Restore ``backup_dir`` into the empty vault ``settings`` point at.

    Raises :class:`RestoreRefused`, changing nothing, when the target holds data or a
    file does not match the manifest.
    """
    try:
        manifest = read_manifest(backup_dir)
    except ManifestError as exc:
        raise RestoreRefused([str(exc)]) from None
    store = open_store(settings)
    reasons = _occupied(settings, manifest, store)
    if reasons:
        raise RestoreRefused(reasons)
    problems = check_backup(backup_dir, manifest=manifest, parallel=parallel, observer=observer)
    if problems:
        raise RestoreRefused(problems)
    restored: list[str] = []
    urls = _database_urls(settings)
    try:
        observer.stage("restore blobs", len(manifest.blobs))
        for key in run_parallel(
            lambda entry: _restore_one(store, backup_dir, entry),
            manifest.blobs,
            parallel=parallel,
        ):
            restored.append(key)
            observer.advance()
        observer.stage("restore databases", len(urls))
        _restore_databases(urls, backup_dir, manifest)
    except BaseException:
        observer.stage("undo", len(restored))
        for key in restored:
            store.delete(key)
        raise
    return manifest


def _restore_one(store: BlobStore, backup_dir: Path, entry: BlobEntry) -> str:
    restore_blob(store, backup_dir, entry)
    return entry.key


def _restore_databases(urls: dict[DatabaseRole, str], backup_dir: Path, manifest: Manifest) -> None:
    done: list[str] = []
    try:
        for role in DATABASE_ROLES:
            if role not in manifest.databases:
                continue  # a backup from before the patient database: see manifest.py
            databases.restore(urls[role], backup_dir / manifest.databases[role].file)
            done.append(urls[role])
    except BaseException as exc:
        advice = [note for url in done if (note := databases.undo_restore(url)) is not None]
        if advice:
            raise BackupError(
                f"{exc}; the restore was undone in part: {'; '.join(advice)}"
            ) from exc
        raise
