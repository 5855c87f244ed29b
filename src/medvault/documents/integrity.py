"""Proactive integrity checks: decrypt stored versions and compare their SHA-256.

Downloads already check every byte they serve, but a damaged blob is then only found
when a clinician needs it. This sweep finds damage early, and it also clears the
``corrupt`` mark of a version whose blob an operator has restored from backup, which
is the only way such a version becomes servable again.

The sweep owns its transactions: it walks versions in keyset batches, reads each
batch in a short session and does the slow decryption outside any transaction, so
it never holds a database lock (SQLite takes the write lock at BEGIN) while reading
blobs, and memory stays flat however many versions there are.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.crypto.errors import CryptoError, KeyringError, UnknownKekError
from medvault.documents import repository
from medvault.documents.content import iter_plaintext, report_corruption
from medvault.documents.ingest import VERSION_BLOB_PREFIX, storage_key_for
from medvault.documents.models import Document, DocumentVersion, VersionState
from medvault.runtime import Runtime
from medvault.storage.base import BlobInfo, BlobNotFound, BlobStoreError

DEFAULT_BATCH_SIZE = 200
# Reports keep this many findings in memory; observers see every one of them.
MAX_LISTED = 1000


class Outcome(StrEnum):
    OK = "ok"
    CORRUPT = "corrupt"
    MISSING = "missing"
    UNVERIFIABLE = "unverifiable"
    """The check could not run (store unreachable, KEK not in the keyring): no verdict."""


@dataclass(frozen=True)
class VersionCheck:
    document_id: uuid.UUID
    version_id: uuid.UUID
    version: int
    outcome: Outcome
    reason: str | None = None
    was_corrupt: bool = False


@dataclass(frozen=True)
class OrphanBlob:
    blob: BlobInfo


Finding = VersionCheck | OrphanBlob


@dataclass
class IntegrityReport:
    checked: int = 0
    ok: int = 0
    corrupt: int = 0
    missing: int = 0
    unverifiable: int = 0
    cleared: int = 0
    orphans: int = 0
    orphans_scanned: bool = False
    failures: list[VersionCheck] = field(default_factory=list)
    """Up to MAX_LISTED failed checks (corrupt, missing or unverifiable)."""
    orphan_blobs: list[BlobInfo] = field(default_factory=list)
    """Up to MAX_LISTED orphan blobs."""

    @property
    def healthy(self) -> bool:
        """True when every checked version verified; orphans are harmless leftovers."""
        return self.corrupt == 0 and self.missing == 0 and self.unverifiable == 0

    def add(self, check: VersionCheck) -> None:
        self.checked += 1
        if check.outcome is Outcome.OK:
            self.ok += 1
            self.cleared += check.was_corrupt
            return
        if check.outcome is Outcome.CORRUPT:
            self.corrupt += 1
        elif check.outcome is Outcome.MISSING:
            self.missing += 1
        else:
            self.unverifiable += 1
        if len(self.failures) < MAX_LISTED:
            self.failures.append(check)

    def summary(self) -> dict[str, int]:
        return {
            "checked": self.checked,
            "ok": self.ok,
            "corrupt": self.corrupt,
            "missing": self.missing,
            "unverifiable": self.unverifiable,
            "cleared": self.cleared,
            "orphans": self.orphans,
        }


class UnknownDocumentError(LookupError):
    """No document with that id."""


def check_version(*, runtime: Runtime, version: DocumentVersion) -> VersionCheck:
    """Decrypt every segment of a version and compare the plaintext SHA-256; no writes."""

    def verdict(outcome: Outcome, reason: str | None = None) -> VersionCheck:
        return VersionCheck(
            version.document_id,
            version.id,
            version.version,
            outcome,
            reason,
            was_corrupt=version.state == VersionState.CORRUPT,
        )

    try:
        for _ in iter_plaintext(runtime, version, 0, max(0, version.size - 1), verify_hash=True):
            pass
    except (UnknownKekError, KeyringError) as exc:
        # A keyring problem says nothing about the blob; marking it corrupt would be wrong.
        return verdict(Outcome.UNVERIFIABLE, str(exc))
    except (CryptoError, BlobNotFound) as exc:
        try:
            present = runtime.blobs.exists(version.storage_key)
        except BlobStoreError as store_exc:
            return verdict(Outcome.UNVERIFIABLE, f"blob store: {store_exc}")
        if not present:
            return verdict(Outcome.MISSING, "blob is missing")
        return verdict(Outcome.CORRUPT, str(exc))
    except BlobStoreError as exc:
        return verdict(Outcome.UNVERIFIABLE, f"blob store: {exc}")
    return verdict(Outcome.OK)


def record_checks(
    runtime: Runtime,
    batch: list[tuple[DocumentVersion, VersionCheck]],
    context: AuditContext,
) -> None:
    """Mark new failures corrupt, clear marks that no longer apply, audit both."""
    failed = [
        (v, c)
        for v, c in batch
        if c.outcome in (Outcome.CORRUPT, Outcome.MISSING) and not c.was_corrupt
    ]
    healed = [v for v, c in batch if c.outcome is Outcome.OK and c.was_corrupt]
    if not failed and not healed:
        return
    for version, check in failed:
        report_corruption(runtime, version, check.reason or check.outcome.value, context=context)
    if not healed:
        return
    with runtime.clinical.session() as session:
        for version in healed:
            row = repository.version_by_id(session, version.id)
            if row is None:
                continue
            row.state = VersionState.AVAILABLE
            audit.record(
                session=session,
                context=context,
                action="document.version.integrity_restored",
                resource_type="DocumentVersion",
                resource_id=version.id,
                details={"document_id": str(version.document_id), "version": version.version},
            )
        session.commit()


def _check_batch(
    runtime: Runtime,
    versions: list[DocumentVersion],
    report: IntegrityReport,
    context: AuditContext,
    on_finding: Callable[[Finding], None] | None,
) -> None:
    # A destroyed version (quarantine, or the end of its retention) has no bytes to check.
    checks = [
        (v, check_version(runtime=runtime, version=v))
        for v in versions
        if v.state != VersionState.DESTROYED
    ]
    record_checks(runtime, checks, context)
    for _, check in checks:
        report.add(check)
        if on_finding is not None and (check.outcome is not Outcome.OK or check.was_corrupt):
            on_finding(check)


def verify_document(
    *,
    runtime: Runtime,
    document_id: uuid.UUID,
    on_finding: Callable[[Finding], None] | None = None,
) -> IntegrityReport:
    """Verify the current version of one document (deleted documents included)."""
    context = AuditContext.system("integrity.verify")
    with runtime.clinical.session() as session:
        document = session.get(Document, document_id)
        if document is None:
            raise UnknownDocumentError(f"no document {document_id}")
        version = repository.version(session, document.id, document.current_version)
        session.commit()
    report = IntegrityReport()
    if version is not None:
        _check_batch(runtime, [version], report, context, on_finding)
    _record_summary(runtime, report, context, resource_id=document_id)
    return report


def verify_all(
    *,
    runtime: Runtime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    scan_orphans: bool = True,
    on_finding: Callable[[Finding], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> IntegrityReport:
    """Verify every version of every document, then look for blobs without a version."""
    context = AuditContext.system("integrity.verify")
    report = IntegrityReport()
    after: uuid.UUID | None = None
    while True:
        with runtime.clinical.session() as session:
            versions = repository.versions_after(session, after, limit=batch_size)
            # End the read transaction before the slow part: no lock is held while decrypting.
            session.commit()
        if not versions:
            break
        _check_batch(runtime, versions, report, context, on_finding)
        after = versions[-1].id
        if on_progress is not None:
            on_progress(report.checked)
    if scan_orphans:
        for orphan in find_orphans(runtime=runtime, batch_size=batch_size):
            report.orphans += 1
            if len(report.orphan_blobs) < MAX_LISTED:
                report.orphan_blobs.append(orphan.blob)
            if on_finding is not None:
                on_finding(orphan)
        report.orphans_scanned = True
    _record_summary(runtime, report, context, resource_id=None)
    return report


def is_version_blob(session: Session, key: str) -> bool:
    try:
        version_id = uuid.UUID(key.rsplit("/", 1)[-1])
    except ValueError:
        return False
    # The key must be exactly the one ingest would have written for this id.
    if storage_key_for(version_id) != key:
        return False
    row = repository.version_by_id(session, version_id)
    # A destroyed version keeps its row but gives up its bytes: if deleting them failed
    # when it was destroyed, the reconciler removes them as an orphan.
    return row is not None and row.storage_key == key and row.state != VersionState.DESTROYED


def _orphans_among(runtime: Runtime, blobs: list[BlobInfo]) -> list[OrphanBlob]:
    # A fresh session per batch keeps the identity map, and so memory, bounded.
    with runtime.clinical.session() as session:
        orphans = [OrphanBlob(blob) for blob in blobs if not is_version_blob(session, blob.key)]
        session.commit()
    return orphans


def find_orphans(*, runtime: Runtime, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[OrphanBlob]:
    """Blobs under the version prefix that no version row points to.

    An upload in flight has its blob before its row (that order makes crashes safe),
    so a blob written moments ago can show up here. This only reports; deleting is
    the reconciler's job, after its grace period.
    """
    batch: list[BlobInfo] = []
    for blob in runtime.blobs.list_blobs(VERSION_BLOB_PREFIX):
        batch.append(blob)
        if len(batch) >= batch_size:
            yield from _orphans_among(runtime, batch)
            batch = []
    if batch:
        yield from _orphans_among(runtime, batch)


def _record_summary(
    runtime: Runtime,
    report: IntegrityReport,
    context: AuditContext,
    *,
    resource_id: uuid.UUID | None,
) -> None:
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=context,
            action="integrity.verify",
            resource_type="Document" if resource_id else None,
            resource_id=resource_id,
            details=report.summary(),
        )
        session.commit()
