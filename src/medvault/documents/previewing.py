"""Reading a version's preview: the content-reading rules, for a picture of the content.

A thumbnail or a page preview shows clinical content, so it is read like the content:
the content permission and the access policy's reach, the scanner's verdict (nothing
derived from an infected version is ever served; under the blocking policy nothing
from a pending one), and one audit event per attempt, whatever its outcome. The image
is decrypted and verified whole (previews are a few hundred KiB at most).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from medvault.access.denials import denied, failed_attempt
from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.crypto.errors import CryptoError, UnknownKekError
from medvault.documents import derived, reading, service
from medvault.documents.content import INTEGRITY_FAILURES
from medvault.documents.models import DerivedKind, DeriveState, VersionDerivative
from medvault.kit.i18n import N_
from medvault.kit.problems import IntegrityFailure, KeyUnavailable, Problem, StorageUnavailable
from medvault.runtime import Runtime
from medvault.storage.base import BlobNotFound, BlobStoreError

logger = logging.getLogger(__name__)

PREVIEW_READ = "document.preview.read"
PREVIEW_SIZES = (DerivedKind.THUMBNAIL, DerivedKind.PREVIEW)
# A preview still being made: worth asking again shortly.
PREVIEW_RETRY_AFTER_SECONDS = 5


class PreviewUnavailable(Problem):
    status, slug, title = 404, "preview-unavailable", N_("This version has no preview")


@dataclass(frozen=True)
class PreviewImage:
    data: bytes
    media_type: str
    # The SHA-256 of the image: a strong validator for If-None-Match.
    etag: str


def read_preview(
    *,
    runtime: Runtime,
    session: Session,
    context: AuditContext,
    principal: Principal,
    document_id: uuid.UUID,
    number: int | None,
    size: DerivedKind,
) -> PreviewImage:
    """Authorise, check the scan, decrypt and audit one preview read; the caller commits."""
    require(principal, Permission.CONTENT_READ)
    with runtime.clinical.read_session() as lookup:
        document, version = service.resolve_version(
            session=lookup, principal=principal, document_id=document_id, number=number
        )
        artifact = derived.artifact_for(lookup, version.id, size)
    grant = reading.ReadGrant(document, version, action=PREVIEW_READ, details={"size": size.value})
    reading.check_scan(runtime, grant, context)
    if artifact is None:
        state = DeriveState(version.preview_state)
        headers = (
            {"Retry-After": str(PREVIEW_RETRY_AFTER_SECONDS)}
            if state == DeriveState.PENDING
            else None
        )
        problem = PreviewUnavailable(
            _unavailable_sentence(state),
            preview_state=state.value,
            reason=version.preview_note,
            headers=headers,
        )
        raise denied(
            problem,
            failed_attempt(
                principal,
                PREVIEW_READ,
                resource_type="Document",
                resource_id=document.id,
                patient_id=document.patient_id,
                context=context,
            ),
        )
    data = _open(runtime, artifact)
    audit.record(
        session=session,
        context=context,
        action=PREVIEW_READ,
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"version": version.version, "size": size.value, "status": 200},
    )
    return PreviewImage(data=data, media_type=artifact.media_type, etag=f'"{artifact.sha256}"')


def _unavailable_sentence(state: DeriveState) -> str:
    if state == DeriveState.PENDING:
        return N_("The preview is being made; try again shortly.")
    if state == DeriveState.UNSUPPORTED:
        return N_("This file type has no preview.")
    if state == DeriveState.FAILED:
        return N_("No preview could be made of this file; download it to view it.")
    return N_("This version has no preview yet.")


def _open(runtime: Runtime, artifact: VersionDerivative) -> bytes:
    try:
        return derived.open_artifact(runtime, artifact)
    except UnknownKekError as error:
        raise KeyUnavailable() from error
    except (CryptoError, BlobNotFound) as error:
        INTEGRITY_FAILURES.inc()
        logger.error(
            "INTEGRITY ALARM: derived artifact %s of version %s failed verification: %s",
            artifact.id,
            artifact.version_id,
            error,
        )
        raise IntegrityFailure() from error
    except BlobStoreError as error:
        raise StorageUnavailable(
            N_("The document store did not answer; try again shortly."),
            headers={"Retry-After": str(PREVIEW_RETRY_AFTER_SECONDS)},
        ) from error
