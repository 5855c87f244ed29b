"""The quarantine REST API: what the malware scanner flagged, released or destroyed by an admin."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Path, Query

from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep
from medvault.documents import quarantine
from medvault.documents.quarantine import QuarantinedVersion, QuarantineList
from medvault.documents.schemas import MAX_DB_INT
from medvault.kit.ids import parse_id
from medvault.kit.text import NONBLANK_TEXT_PATTERN

router = APIRouter(prefix="/api/v1/quarantine", tags=["quarantine"])

Reason = Annotated[
    str,
    Query(
        min_length=1,
        max_length=500,
        pattern=NONBLANK_TEXT_PATTERN,
        description="Why (kept in the audit log)",
    ),
]
Number = Annotated[int, Path(ge=1, le=MAX_DB_INT)]


@router.get("", response_model=QuarantineList)
def list_quarantined(
    session: ClinicalSession, principal: CurrentPrincipal, context: AuditCtx
) -> QuarantineList:
    """Infected versions awaiting an administrator's decision."""
    listed = quarantine.list_quarantined(session=session, principal=principal, context=context)
    session.commit()
    return listed


@router.post("/{document_id}/versions/{number}/release", response_model=QuarantinedVersion)
def release_version(
    document_id: str,
    number: Number,
    reason: Reason,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> QuarantinedVersion:
    """A false positive: the version is served again."""
    released = quarantine.release(
        session=session,
        runtime=runtime,
        principal=principal,
        context=context,
        document_id=parse_id(document_id),
        number=number,
        reason=reason.strip(),
    )
    session.commit()
    return released


@router.post("/{document_id}/versions/{number}/destroy", response_model=QuarantinedVersion)
async def destroy_version(
    document_id: str,
    number: Number,
    reason: Reason,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> QuarantinedVersion:
    """Delete the version's bytes for good; its row and audit trail stay, reads answer 410."""

    def decide() -> tuple[QuarantinedVersion, str]:
        destroyed, key = quarantine.destroy(
            session=session,
            principal=principal,
            context=context,
            document_id=parse_id(document_id),
            number=number,
            reason=reason.strip(),
        )
        session.commit()
        return destroyed, key

    destroyed, key = await to_thread.run_sync(decide)
    await to_thread.run_sync(quarantine.discard_blob, runtime, key)
    return destroyed
