"""Key rotation: a new active KEK, then every version's DEK re-wrapped under it.

Derived artifacts (previews, extracted text: ``documents.derived``) have data keys of
their own, wrapped the same way, and are re-wrapped in the same pass.

Only the ``kek_id``/``wrapped_dek`` columns change; blobs are never touched. The order
is what makes a crash safe: the new KEK is durable in the keyring file *before* any
row is wrapped with it, so no row can ever name a key that was lost. Rows are
re-wrapped in keyset batches, one commit per batch, and rows already on the active
KEK are skipped, so an interrupted rotation finishes with ``rewrap_only=True``.

What rotation does not do: blobs written before headers were detached keep the DEK
wrapped under the KEK of their day in their header, and database backups keep the
rows' old wraps; both stay readable with the old KEK until ``retire_kek`` removes it.
Rotation limits the use of old keys for new wraps; it is not a remedy for a leaked KEK
on those old blobs.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

# Imported for its effect: every domain's tables in ClinicalBase.metadata, which the
# retirement check walks.
from medvault import models_registry  # noqa: F401
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.crypto.errors import CryptoError, KeyringError
from medvault.crypto.keyring import (
    DESTROYED_KEK_ID,
    WrappedDek,
    load_keyring,
    write_keyring_file,
)
from medvault.db.base import ClinicalBase
from medvault.documents import repository
from medvault.documents.models import ComposeDraft, DocumentVersion, VersionDerivative
from medvault.kit.clock import utcnow
from medvault.kit.private_files import make_private_dirs
from medvault.runtime import Runtime
from medvault.uploads.models import UploadChunk

DEFAULT_BATCH_SIZE = 500
MAX_LISTED_FAILURES = 100


class RotationRefusedError(Exception):
    """Rotation cannot run in this configuration; the message says what to do instead."""


@dataclass
class RotationResult:
    active_kek_id: str
    previous_kek_id: str
    created_kek: bool
    rewrapped: int = 0
    already_current: int = 0
    failed: int = 0
    failures: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    """Up to MAX_LISTED_FAILURES (version id, reason) pairs that could not be re-wrapped."""


@contextmanager
def _exclusive(keyring_path: Path) -> Iterator[None]:
    """One rotation at a time: two concurrent ones would each write a keyring file
    without the other's new KEK, losing the key that some rows were wrapped with."""
    lock_path = keyring_path.with_name(f".{keyring_path.name}.lock")
    make_private_dirs(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RotationRefusedError(
                f"Another key rotation holds {lock_path}; wait for it to finish."
            ) from None
        yield
    finally:
        os.close(fd)


def _add_active_kek(runtime: Runtime, context: AuditContext) -> str:
    settings = runtime.settings
    if settings.keyring:
        raise RotationRefusedError(
            "The keyring comes from MEDVAULT_KEYRING, which this command cannot change. "
            "Add a new key to that keyring, make it the active one, restart the vault, then "
            "run `medvault keys rotate --rewrap-only` to re-wrap the data keys under it."
        )
    path = settings.keyring_path
    # Re-read under the lock: the in-memory keyring may predate another rotation.
    current = load_keyring(env_value=None, path=path, create=False)
    rotated = current.with_new_active_kek()
    write_keyring_file(path, rotated)
    runtime.reload_keyring()
    if runtime.keyring.active_id != rotated.active_id:
        raise KeyringError(f"{path} did not keep the new KEK {rotated.active_id}")
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=context,
            action="keys.kek.create",
            resource_type="Kek",
            resource_id=rotated.active_id,
            details={"previous_kek_id": current.active_id},
        )
        session.commit()
    return current.active_id


Wrapped = DocumentVersion | VersionDerivative | ComposeDraft | UploadChunk
# Rows after an id, in id order: one keyset batch of a table whose rows carry a wrap.
BatchLoader = Callable[[Session, uuid.UUID | None, int], Sequence[Wrapped]]


def _versions_after(
    session: Session, after: uuid.UUID | None, limit: int
) -> Sequence[DocumentVersion]:
    return repository.versions_after(session, after, limit=limit)


def _derivatives_after(
    session: Session, after: uuid.UUID | None, limit: int
) -> Sequence[VersionDerivative]:
    query = select(VersionDerivative).order_by(VersionDerivative.id).limit(limit)
    if after is not None:
        query = query.where(VersionDerivative.id > after)
    return list(session.scalars(query))


def _drafts_after(session: Session, after: uuid.UUID | None, limit: int) -> Sequence[ComposeDraft]:
    query = select(ComposeDraft).order_by(ComposeDraft.id).limit(limit)
    if after is not None:
        query = query.where(ComposeDraft.id > after)
    return list(session.scalars(query))


def _chunks_after(session: Session, after: uuid.UUID | None, limit: int) -> Sequence[UploadChunk]:
    """Chunks of unfinished resumable uploads: their keys are wrapped like a version's."""
    query = select(UploadChunk).order_by(UploadChunk.id).limit(limit)
    if after is not None:
        query = query.where(UploadChunk.id > after)
    return list(session.scalars(query))


LOADERS: tuple[BatchLoader, ...] = (
    _versions_after,
    _derivatives_after,
    _drafts_after,
    _chunks_after,
)


def _rewrap_all(
    runtime: Runtime,
    result: RotationResult,
    batch_size: int,
    on_progress: Callable[[int], None] | None,
) -> None:
    seen = 0
    for load in LOADERS:
        seen = _rewrap_table(runtime, result, batch_size, on_progress, load, seen)


def _rewrap_table(
    runtime: Runtime,
    result: RotationResult,
    batch_size: int,
    on_progress: Callable[[int], None] | None,
    load: BatchLoader,
    seen: int,
) -> int:
    keyring = runtime.keyring
    after: uuid.UUID | None = None
    while True:
        with runtime.clinical.session() as session:
            versions = load(session, after, batch_size)
            for version in versions:
                if version.kek_id == keyring.active_id:
                    result.already_current += 1
                    continue
                if version.kek_id == DESTROYED_KEK_ID:
                    continue  # destroyed under the retention schedule: no key to wrap
                try:
                    rewrapped = keyring.rewrap(
                        WrappedDek(version.kek_id, version.wrapped_dek), version_id=version.id
                    )
                except CryptoError as exc:
                    # An unknown KEK or a damaged wrap: leave the row as it is, report it.
                    result.failed += 1
                    if len(result.failures) < MAX_LISTED_FAILURES:
                        result.failures.append((version.id, str(exc)))
                    continue
                # Both columns in one row update: a row never pairs one KEK's id with
                # another KEK's wrap.
                version.kek_id = rewrapped.kek_id
                version.wrapped_dek = rewrapped.wrapped
                result.rewrapped += 1
            session.commit()
        if not versions:
            return seen
        after = versions[-1].id
        seen += len(versions)
        if on_progress is not None:
            on_progress(seen)


def rotate_keys(
    *,
    runtime: Runtime,
    rewrap_only: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> RotationResult:
    """Add a new active KEK to the keyring file, then re-wrap every DEK under it.

    With ``rewrap_only`` no key is added: rows not yet on the active KEK are re-wrapped
    (to finish an interrupted rotation, or after an operator changed MEDVAULT_KEYRING).
    Owns its transactions: one commit per batch, so progress survives a crash.
    """
    context = AuditContext.system("keys.rotate")
    # A keyring from the environment is never written here, so there is nothing to lock.
    uses_file = not runtime.settings.keyring
    lock: AbstractContextManager[None] = (
        _exclusive(runtime.settings.keyring_path) if uses_file else nullcontext()
    )
    with lock:
        if rewrap_only:
            previous = runtime.reload_keyring().active_id
        else:
            previous = _add_active_kek(runtime, context)
        result = RotationResult(
            active_kek_id=runtime.keyring.active_id,
            previous_kek_id=previous,
            created_kek=not rewrap_only,
        )
        _rewrap_all(runtime, result, batch_size, on_progress)
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=context,
            action="keys.rotate",
            resource_type="Kek",
            resource_id=result.active_kek_id,
            details={
                "previous_kek_id": result.previous_kek_id,
                "created_kek": result.created_kek,
                "rewrapped": result.rewrapped,
                "already_current": result.already_current,
                "failed": result.failed,
            },
        )
        session.commit()
    return result


def _rows_wrapped_under(session: Session, kek_id: str) -> int:
    """Rows of *any* clinical table that name the KEK, in any ``*kek_id`` column.

    Beyond the tables rotation re-wraps, short-lived artifacts carry wraps too (patient
    exports and their sealed passphrases, FHIR bulk-export files): a KEK retired under
    them would make them unreadable before they expire, so they hold retirement off.
    """
    count = 0
    for table in ClinicalBase.metadata.sorted_tables:
        for column in table.c:
            if column.name.endswith("kek_id"):
                query = select(func.count()).select_from(table).where(column == kek_id)
                count += session.scalar(query) or 0
    return count


def retire_kek(runtime: Runtime, kek_id: str, *, in_flight: timedelta | None = None) -> None:
    """Remove an inactive KEK from the keyring file, once no row still needs it.

    What it wrapped becomes unreadable everywhere: blob headers written under it, and
    every backup of the database taken before the rows were re-wrapped. That is how a
    destroyed record's copies die too (README "Records governance": destruction and
    backups). Refuses while any row still names the KEK: run ``keys rotate`` first.

    It also refuses until ``in_flight`` (default: the upload deadline, half the
    reconcile grace) has passed since its successor became active: an upload wrapped
    under it just before the rotation may still be about to commit.
    """
    if in_flight is None:
        in_flight = timedelta(seconds=runtime.settings.reconcile_grace_seconds / 2)
    if runtime.settings.keyring:
        raise RotationRefusedError(
            "The keyring comes from MEDVAULT_KEYRING, which this command cannot change: "
            "remove the key there, after `medvault keys rotate --rewrap-only` reports none left."
        )
    path = runtime.settings.keyring_path
    with _exclusive(path):
        current = load_keyring(env_value=None, path=path, create=False)
        retired = current.without(kek_id)
        successors = [
            kek.created_at
            for kek in (current.get(other) for other in current.kek_ids)
            if kek.created_at > current.get(kek_id).created_at
        ]
        if successors and utcnow() - min(successors) < in_flight:
            raise RotationRefusedError(
                f"{kek_id} was active until {min(successors):%Y-%m-%d %H:%M} UTC; uploads "
                f"begun under it may still commit. Retire it after {in_flight} have passed."
            )
        with runtime.clinical.session() as session:
            still = _rows_wrapped_under(session, kek_id)
            if still:
                raise RotationRefusedError(
                    f"{still} data keys are still wrapped under {kek_id}; run "
                    "`medvault keys rotate --rewrap-only`, then retire it."
                )
            write_keyring_file(path, retired)
            runtime.reload_keyring()
            audit.record(
                session=session,
                context=AuditContext.system("keys.retire"),
                action="keys.kek.retire",
                resource_type="Kek",
                resource_id=kek_id,
                details={"active_kek_id": retired.active_id},
            )
            session.commit()
