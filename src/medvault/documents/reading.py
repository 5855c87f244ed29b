"""The one content-reading use case: authorise, resolve the version, audit, plan the bytes.

Every face that serves a version's bytes calls :func:`read_content`: the REST content
routes, FHIR Binary (raw and base64 JSON), the portal's view and download, and signed
links. So they all check access the same way, write the same audit event, and answer
ranges, validators and integrity failures alike. Only *who* may read differs, and it
comes in as an :data:`Authorise` callable: a principal under the access policy
(:func:`for_principal`, also behind FHIR Binary) or a signed link (``shares.service``).

The steps, and why in this order:

1. Authorise and resolve in a read-only session of its own. On SQLite the request's
   session would take the write lock, and step 3 marks a corrupt version in a session
   of its own, which would then wait on the request forever.
2. Refuse a version the malware scanner has not cleared (:func:`check_scan`): infected
   or destroyed never, pending or failed only under the ``blocking`` policy. Refusals
   are audited like any other denied read, signed links included.
3. Plan the content, pulling its first piece: a missing or tampered blob becomes a clean
   error (integrity alarm; 503 when the store is down), never a cut connection.
4. Commit the audit event, naming the answer (status, range), before returning: the
   read is on record before the first byte leaves (no audit, no bytes: a 503). A read
   changes nothing else, so unlike other services this one commits, and its event
   shares a commit with concurrent reads' (``audit.record_read``, ``db.group_commit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from medvault.access.denials import denied, failed_attempt
from medvault.access.policy import Permission, require
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.documents import service
from medvault.documents.content import ContentPlan, plan_content
from medvault.documents.models import Document, DocumentVersion, ScanState, VersionState
from medvault.kit.i18n import N_
from medvault.kit.problems import Problem
from medvault.kit.read_conditions import ReadConditions
from medvault.runtime import Runtime

CONTENT_READ = "document.content.read"
# How long a client refused a pending version is told to wait: a small file's scan
# takes well under a second, a large one some seconds.
SCAN_RETRY_AFTER_SECONDS = 10


class Quarantined(Problem):
    status, slug, title = 403, "quarantined", N_("The malware scanner quarantined this version")


class ContentDestroyed(Problem):
    status, slug, title = 410, "content-destroyed", N_("This version's content was destroyed")


class ScanPending(Problem):
    status, slug, title = 503, "scan-pending", N_("The malware scan has not finished")


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
    context: AuditContext,
    authorise: Authorise,
    conditions: ReadConditions,
    disposition: str = "attachment",
) -> ContentPlan:
    """Authorise, resolve, plan and durably audit one content read; the caller streams.

    Refuses with the problem ``authorise`` raises (404, 410, 403), 416 for a range past
    the end, and an integrity failure or 503 when the stored bytes cannot be served.
    """
    with runtime.clinical.read_session() as lookup:
        grant = authorise(lookup)
    check_scan(runtime, grant, context)
    plan = plan_content(
        runtime=runtime, version=grant.version, conditions=conditions, disposition=disposition
    )
    event = audit.build(
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
    try:
        audit.record_read(runtime.clinical, event)
    except BaseException:
        if isinstance(plan.body, Generator):
            plan.body.close()  # the blob stream opened for step 3 is not needed now
        raise
    return plan


def check_scan(runtime: Runtime, grant: ReadGrant, context: AuditContext) -> None:
    """Refuse content the scanner has not cleared; the refusal is audited as a denied read."""
    version = grant.version
    problem = refusal(version, blocking=runtime.settings.scan_policy == "blocking")
    if problem is None:
        return
    # The caller reaches the record (it was authorised): a failed attempt, named by the
    # request's context, which for a signed link has no principal behind it.
    raise denied(
        problem,
        failed_attempt(
            None,
            grant.action,
            resource_type="Document",
            resource_id=grant.document.id,
            patient_id=grant.document.patient_id,
            context=context,
        ),
    )


def refusal(version: DocumentVersion, *, blocking: bool) -> Problem | None:
    """Why this version's bytes may not be served now, or None when they may."""
    if version.state == VersionState.DESTROYED:
        return ContentDestroyed(
            N_("An administrator destroyed this version after the malware scanner flagged it.")
        )
    if version.scan_state == ScanState.INFECTED:
        return Quarantined(
            N_(
                "The malware scanner flagged this version, so it is not served. An "
                "administrator can review it."
            )
        )
    if blocking and version.scan_state in (ScanState.PENDING, ScanState.FAILED):
        return ScanPending(
            N_("This version is being checked for malware; try again shortly."),
            headers={"Retry-After": str(SCAN_RETRY_AFTER_SECONDS)},
        )
    return None
