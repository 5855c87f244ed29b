"""Backfilling SHA-1 (FHIR's Attachment.hash) for versions stored before the vault kept it.

New uploads get their SHA-1 from a job after their commit (``fhir.hashing``), or
during ingest when a FHIR client declared one. Versions stored before either existed
have ``sha1`` NULL and their DocumentReference simply leaves ``hash`` out. This fills
them in by streaming each version through the same decryption path as a download:
segment by segment, with the plaintext SHA-256 re-checked, so a hash is only ever
recorded for bytes the vault has just verified, and memory stays flat however large
the file.

Like the integrity sweep, it owns its transactions: versions are listed in keyset
batches in short read sessions, the slow decryption runs outside any transaction,
and each hash is written in its own short transaction (only where still NULL, so a
concurrent run or a new upload is never overwritten).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select, update

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.crypto.errors import CryptoError, KeyringError
from medvault.documents.content import iter_plaintext
from medvault.documents.models import DocumentVersion, VersionState
from medvault.runtime import Runtime
from medvault.storage.base import BlobNotFound, BlobStoreError

DEFAULT_BATCH_SIZE = 200
MAX_LISTED = 1000


@dataclass
class BackfillReport:
    filled: int = 0
    skipped: int = 0
    failures: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    """Up to MAX_LISTED versions whose bytes could not be verified (see ``medvault verify``)."""


def _missing(runtime: Runtime, after: uuid.UUID | None, limit: int) -> list[DocumentVersion]:
    with runtime.clinical.read_session() as session:
        query = (
            select(DocumentVersion)
            .where(DocumentVersion.sha1.is_(None))
            .order_by(DocumentVersion.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(DocumentVersion.id > after)
        return list(session.scalars(query))


def sha1_of(runtime: Runtime, version: DocumentVersion) -> str:
    digest = hashlib.sha1(usedforsecurity=False)  # FHIR's Attachment.hash, not security
    for piece in iter_plaintext(runtime, version, 0, version.size - 1, verify_hash=True):
        digest.update(piece)
    return digest.hexdigest()


def backfill_sha1(
    runtime: Runtime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> BackfillReport:
    """Compute and store the SHA-1 of every version that has none; returns what happened."""
    report = BackfillReport()
    after: uuid.UUID | None = None
    while batch := _missing(runtime, after, batch_size):
        for version in batch:
            after = version.id
            if version.state == VersionState.CORRUPT:
                reason = "marked corrupt by an earlier check"
            else:
                try:
                    sha1 = sha1_of(runtime, version)
                except (CryptoError, KeyringError, BlobNotFound, BlobStoreError) as exc:
                    # Not this job's business to mark versions corrupt: `medvault verify`
                    # does that, with its own audit trail. It only refuses to guess.
                    reason = f"{exc.__class__.__name__}: {exc}"
                else:
                    with runtime.clinical.session() as session:
                        session.execute(
                            update(DocumentVersion)
                            .where(DocumentVersion.id == version.id, DocumentVersion.sha1.is_(None))
                            .values(sha1=sha1)
                        )
                        session.commit()
                    report.filled += 1
                    if progress is not None:
                        progress(report.filled)
                    continue
            report.skipped += 1
            if len(report.failures) < MAX_LISTED:
                report.failures.append((version.id, reason))
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=AuditContext.system("fhir-hash-backfill"),
            action="document.version.hash_backfill",
            details={"filled": report.filled, "skipped": report.skipped},
        )
        session.commit()
    return report
