"""The one content-reading use case: authorise, resolve the version, audit, plan the bytes.

Every face that serves a version's bytes calls :func:`read_content`: the REST content
routes, FHIR Binary (raw and base64 JSON), the portal's view and download, and signed
links. So they all check access the same way, write the same audit event, and answer
ranges, validators and integrity failures alike. Only *who* may read differs, and it
comes in as an :data:`Authorise` callable: a principal under the access policy
(:func:`for_principal`, also behind FHIR Binary) or a signed link (``shares.service``).

The steps, and why in this order:

1. Authorise and resolve in a read-only session of its own. On SQLite the request's
   session would take the write lock, and step 2 marks a corrupt version in a session
   of its own, which would then wait on the request forever.
2. Plan the content, pulling its first piece: a missing or tampered blob becomes a clean
   error (integrity alarm; 503 when the store is down), never a cut connection.
3. Add the audit event to the request's session, naming the answer (status, range).

Like every service this flushes and never commits: the route commits the event once,
before the first byte leaves (``audit.commit_or_refuse``: no audit, no bytes, a 503).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import service
from medvault.documents.content import ContentPlan, plan_content
from medvault.documents.models import Document, DocumentVersion
from medvault.kit.read_conditions import ReadConditions
from medvault.runtime import Runtime

CONTENT_READ = "document.content.read"


@dataclass(frozen=True)
class ReadGrant:
    """A version the caller may read, and how the read is named in the audit log."""

    document: Document
    version: DocumentVersion
    action: str = CONTENT_READ
    # Added to the event's details (who issued a link, the form served, ...).
    details: Mapping[str, Any] = field(default_factory=dict)


# Decides, in the lookup session it is given, whether the read may happen: a ReadGrant,
# or a problem (carrying its audited denial) that refuses it.
Authorise = Callable[[Session], ReadGrant]


def for_principal(
    principal: Principal, document_id: uuid.UUID, number: int | None = None
) -> Authorise:
    """The access policy for a signed-in caller: content permission, reach, not deleted.

    ``number`` None reads the current version.
    """

    def authorise(session: Session) -> ReadGrant:
        require(principal, Permission.CONTENT_READ)
        document, version = service.resolve_version(
            session=session, principal=principal, document_id=document_id, number=number
        )
        return ReadGrant(document, version)

    return authorise


def read_content(
    *,
    runtime: Runtime,
    session: Session,
    context: AuditContext,
    authorise: Authorise,
    conditions: ReadConditions,
    disposition: str = "attachment",
) -> ContentPlan:
    """Authorise, resolve, plan and audit one content read; the caller commits, then streams.

    Refuses with the problem ``authorise`` raises (404, 410, 403), 416 for a range past
    the end, and an integrity failure or 503 when the stored bytes cannot be served.
    """
    with runtime.clinical.read_session() as lookup:
        grant = authorise(lookup)
    plan = plan_content(
        runtime=runtime, version=grant.version, conditions=conditions, disposition=disposition
    )
    audit.record(
        session=session,
        context=context,
        action=grant.action,
        resource_type="Document",
        resource_id=grant.document.id,
        patient_id=grant.document.patient_id,
        details={
            "version": grant.version.version,
            "status": plan.status,
            "range": plan.headers.get("Content-Range"),
            **grant.details,
        },
    )
    return plan
