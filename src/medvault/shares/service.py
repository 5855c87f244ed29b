"""Issuing signed download links, and reading content with one, both audited."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from medvault.access.denials import denied, failed_attempt
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import reading, repository
from medvault.documents import service as documents
from medvault.documents.models import Document, DocumentStatus
from medvault.documents.schemas import DownloadUrlOut, DownloadUrlRequest
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import Gone, SignedUrlInvalid, ValidationFailed
from medvault.runtime import Runtime
from medvault.shares import signed_urls

DOWNLOAD_PATH = "/api/v1/download/"
LINK_USE = "document.download_url.use"


def issue(
    *,
    session: Session,
    runtime: Runtime,
    principal: Principal,
    document_id: uuid.UUID,
    request: DownloadUrlRequest,
    base_url: str,
    context: AuditContext,
) -> DownloadUrlOut:
    settings = runtime.settings
    ttl = request.expires_in or settings.download_url_ttl_seconds
    if ttl > settings.download_url_max_ttl_seconds:
        raise ValidationFailed(
            msg(
                "expires_in may be at most {limit} seconds.",
                limit=settings.download_url_max_ttl_seconds,
            )
        )
    document, version = documents.resolve_version(
        session=session,
        principal=principal,
        document_id=document_id,
        number=request.version,
        attempt="document.download_url.issue",
    )
    # A link to bytes that will never be served is refused now, not when it is used.
    # Pending is fine: the link may well be used after the scan says clean.
    refused = reading.refusal(version, blocking=False)
    if refused is not None:
        raise denied(
            refused,
            failed_attempt(
                principal,
                "document.download_url.issue",
                resource_type="Document",
                resource_id=document.id,
                patient_id=document.patient_id,
            ),
        )
    token, grant = signed_urls.sign(
        secret=runtime.secret_key,
        version_id=version.id,
        document_id=document.id,
        issued_by=context.actor_id,
        ttl_seconds=ttl,
    )
    audit.record(
        session=session,
        context=context,
        action="document.download_url.issue",
        resource_type="Document",
        resource_id=document.id,
        patient_id=document.patient_id,
        details={"version": version.version, "link_id": grant.link_id, "ttl_seconds": ttl},
    )
    return DownloadUrlOut(
        url=base_url.rstrip("/") + DOWNLOAD_PATH + token,
        expires_at=grant.expires_at,
        version=version.version,
    )


def for_link(*, runtime: Runtime, token: str, context: AuditContext) -> reading.Authorise:
    """A signed link as the credential of a content read (``documents.reading``).

    The link grants exactly one version; a valid link to a deleted document is refused
    (410) and still audited, as the attempted use it is (``context`` names the link).
    """

    def authorise(session: Session) -> reading.ReadGrant:
        grant = signed_urls.verify(secret=runtime.secret_key, token=token)
        version = repository.version_by_id(session, grant.version_id)
        document = session.get(Document, grant.document_id)
        if version is None or document is None or version.document_id != document.id:
            raise SignedUrlInvalid(N_("The link points at nothing."))
        if document.status == DocumentStatus.DELETED:
            problem = Gone(N_("This document was deleted after the link was made."))
            raise denied(
                problem,
                failed_attempt(
                    None,
                    LINK_USE,
                    resource_type="Document",
                    resource_id=document.id,
                    patient_id=document.patient_id,
                    context=context,
                ),
            )
        return reading.ReadGrant(
            document,
            version,
            action=LINK_USE,
            details={"link_id": grant.link_id, "issued_by": grant.issued_by},
        )

    return authorise
