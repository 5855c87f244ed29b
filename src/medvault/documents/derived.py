"""Derived artifacts of a version (thumbnail, page preview, extracted text), encrypted.

A preview shows clinical content and extracted text *is* clinical content, so both are
kept exactly as versions are: a fresh data key wrapped by the keyring, the segmented
AES-GCM envelope, an immutable blob key under ``derived/`` bound to the artifact's own
id (the envelope header and every segment's associated data carry it, so a blob cannot
be swapped for another). Plaintext exists only in memory, in the worker that made it
and in the request that serves it.

Artifacts are small (a WebP of at most 1200 px, or a document's text), so they are
sealed and opened whole; the envelope still verifies every segment and the SHA-256.

Ordering is the upload's: the blob is durable before its row commits, and a row that
replaces an older artifact hands back the old blob's key for the caller to delete after
its commit. A crash in between leaves an orphan under ``derived/``, which the
reconciler removes after its grace period.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medvault.crypto.envelope import EnvelopeWriter
from medvault.crypto.keyring import new_dek
from medvault.documents.content import iter_plaintext
from medvault.documents.models import DerivedKind, DocumentVersion, VersionDerivative
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime

DERIVED_BLOB_PREFIX = "derived/"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


def derived_key(artifact_id: uuid.UUID) -> str:
    return f"{DERIVED_BLOB_PREFIX}{artifact_id.hex[:2]}/{artifact_id}"


@dataclass(frozen=True)
class SealedArtifact:
    """An encrypted, durable blob not yet recorded in the database."""

    id: uuid.UUID
    storage_key: str
    kek_id: str
    wrapped_dek: bytes
    size: int
    sha256: str
    started_at: datetime


def seal(runtime: Runtime, data: bytes) -> SealedArtifact:
    """Encrypt ``data`` into a new blob under ``derived/`` and make it durable."""
    artifact_id = uuid.uuid4()
    started_at = utcnow()
    dek = new_dek()
    wrapped = runtime.current_keyring().wrap_dek(dek, version_id=artifact_id)
    envelope = EnvelopeWriter(
        dek=dek,
        version_id=artifact_id,
        segment_size=runtime.settings.segment_size,
    )
    key = derived_key(artifact_id)
    writer = runtime.blobs.writer(key)
    try:
        writer.write(envelope.header_bytes())
        writer.write(envelope.update_view(data))
        writer.write(envelope.finalize())
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return SealedArtifact(
        id=artifact_id,
        storage_key=key,
        kek_id=wrapped.kek_id,
        wrapped_dek=wrapped.wrapped,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        started_at=started_at,
    )


def record(
    session: Session,
    version: DocumentVersion,
    kind: DerivedKind,
    sealed: SealedArtifact,
    *,
    media_type: str,
    width: int | None = None,
    height: int | None = None,
) -> list[str]:
    """Add the artifact's row in the caller's transaction, replacing an older one.

    Returns the blob keys the replaced rows pointed to: delete them after the commit
    (before it, a rollback would leave the old row pointing at nothing).
    """
    replaced = list(
        session.scalars(
            select(VersionDerivative.storage_key).where(
                VersionDerivative.version_id == version.id, VersionDerivative.kind == kind.value
            )
        )
    )
    if replaced:
        session.execute(
            delete(VersionDerivative).where(
                VersionDerivative.version_id == version.id, VersionDerivative.kind == kind.value
            )
        )
    session.add(
        VersionDerivative(
            id=sealed.id,
            version_id=version.id,
            kind=kind.value,
            media_type=media_type,
            size=sealed.size,
            sha256=sealed.sha256,
            storage_key=sealed.storage_key,
            kek_id=sealed.kek_id,
            wrapped_dek=sealed.wrapped_dek,
            width=width,
            height=height,
            created_at=utcnow(),
        )
    )
    session.flush()
    return replaced


def artifact_for(
    session: Session, version_id: uuid.UUID, kind: DerivedKind
) -> VersionDerivative | None:
    return session.scalars(
        select(VersionDerivative).where(
            VersionDerivative.version_id == version_id, VersionDerivative.kind == kind.value
        )
    ).first()


def open_artifact(runtime: Runtime, artifact: VersionDerivative) -> bytes:
    """The artifact's plaintext, every segment and the SHA-256 verified.

    Raises ``crypto.errors.IntegrityError`` (or ``CryptoError``) when the blob is
    missing or was tampered with, and ``BlobStoreError`` when the store is down.
    """
    if artifact.size == 0:
        return b""
    return b"".join(iter_plaintext(runtime, artifact, 0, artifact.size - 1, verify_hash=True))


def read_text(runtime: Runtime, version_id: uuid.UUID) -> str | None:
    """A version's extracted text, decrypted; None when it has none."""
    with runtime.clinical.read_session() as session:
        artifact = artifact_for(session, version_id, DerivedKind.TEXT)
    if artifact is None:
        return None
    return open_artifact(runtime, artifact).decode("utf-8")


def remove_for_version(session: Session, version_id: uuid.UUID) -> list[str]:
    """Delete a version's artifact rows; returns their blob keys to delete after commit."""
    keys = list(
        session.scalars(
            select(VersionDerivative.storage_key).where(VersionDerivative.version_id == version_id)
        )
    )
    if keys:
        session.execute(delete(VersionDerivative).where(VersionDerivative.version_id == version_id))
    return keys


def is_derived_blob(session: Session, key: str) -> bool:
    """Whether ``key`` is the blob of an artifact row (the reconciler keeps those)."""
    try:
        artifact_id = uuid.UUID(key.rsplit("/", 1)[-1])
    except ValueError:
        return False
    if derived_key(artifact_id) != key:
        return False
    return session.get(VersionDerivative, artifact_id) is not None
