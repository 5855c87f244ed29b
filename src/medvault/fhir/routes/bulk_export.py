"""FHIR Bulk Data export routes (the IG's asynchronous request pattern).

Kick-off answers 202 with ``Content-Location``; the status URL answers 202 with
``X-Progress`` and ``Retry-After`` while the job runs, then 200 with the manifest; the
manifest's files are downloaded with the same token. Every step but polling is audited
(``fhir.bulk_export.*``), and an export is its requester's alone.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from medvault.audit import service as audit
from medvault.deps import AuditCtx, ClinicalSession, CurrentPrincipal, RuntimeDep
from medvault.fhir.base import base_url
from medvault.fhir.bulk import parameters
from medvault.fhir.bulk import service as bulk
from medvault.fhir.wire.http import query_params
from medvault.fhir.wire.media import dumps
from medvault.fhir.wire.outcome import information
from medvault.fhir.wire.references import uuid_or_404
from medvault.fhir.wire.responses import fhir_response, negotiate

router = APIRouter()

PreferHeader = Annotated[
    str | None,
    Header(alias="Prefer", description="`respond-async` (required: the export is asynchronous)"),
]
OutputFormat = Annotated[
    str | None,
    Query(alias="_outputFormat", description="application/fhir+ndjson (the default)"),
]
Types = Annotated[
    str | None,
    Query(alias="_type", description="Comma-separated: Patient, DocumentReference (default both)"),
]
Since = Annotated[
    str | None,
    Query(alias="_since", description="Only resources last updated after this FHIR instant"),
]


def _kick_off(
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    prefer: str | None,
    *,
    level: str,
) -> Response:
    media_type = negotiate(request)
    parameters.check_prefer(prefer)
    wanted = parameters.parse(query_params(request))
    base = base_url(request, runtime.settings)
    path = "/$export" if level == "system" else "/Patient/$export"
    query = request.url.query
    export = bulk.start(
        session=session,
        principal=principal,
        context=context,
        level=level,
        parameters=wanted,
        request_url=f"{base}{path}" + (f"?{query}" if query else ""),
        base=base,
        ttl_seconds=runtime.settings.bulk_export_ttl_seconds,
    )
    audit.commit_or_refuse(session)
    return fhir_response(
        information("Export accepted: poll the Content-Location URL for its status."),
        status=202,
        media_type=media_type,
        headers={"Content-Location": f"{base}/$export-status/{export.id}"},
    )


@router.get("/Patient/$export", status_code=202)
def patient_export(
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    prefer: PreferHeader = None,
    _output_format: OutputFormat = None,
    _type: Types = None,
    _since: Since = None,
) -> Response:
    """Export every patient the caller reaches, with their DocumentReferences."""
    return _kick_off(request, session, principal, context, runtime, prefer, level="patient")


@router.get("/$export", status_code=202)
def system_export(
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    prefer: PreferHeader = None,
    _output_format: OutputFormat = None,
    _type: Types = None,
    _since: Since = None,
) -> Response:
    """Export everything: only for callers that reach every patient."""
    return _kick_off(request, session, principal, context, runtime, prefer, level="system")


@router.get("/$export-status/{export_id}")
def export_status(
    export_id: str,
    request: Request,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> Response:
    """202 while the export runs; 200 with the manifest once it is done."""
    found = bulk.status(
        session=session,
        principal=principal,
        export_id=uuid_or_404(export_id, "bulk export"),
        context=context,
        base=base_url(request, runtime.settings),
    )
    if found.manifest is None:
        progress = found.progress or "queued"
        return fhir_response(
            information(f"In progress: {progress}."),
            status=202,
            headers={"X-Progress": progress, "Retry-After": str(bulk.RETRY_AFTER_SECONDS)},
        )
    audit.commit_or_refuse(session)
    return Response(
        dumps(found.manifest),
        media_type="application/json",
        headers={"Cache-Control": "private, no-store"},
    )


@router.delete("/$export-status/{export_id}", status_code=202)
def cancel_export(
    export_id: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> Response:
    """Cancel the export and delete its files; its status is then 404."""
    keys = bulk.cancel(
        session=session,
        principal=principal,
        export_id=uuid_or_404(export_id, "bulk export"),
        context=context,
    )
    audit.commit_or_refuse(session)
    bulk.delete_blobs(runtime.blobs, keys)  # after the commit: no row may name a lost blob
    return fhir_response(information("Export cancelled; its files are deleted."), status=202)


@router.get(
    "/$export-file/{export_id}/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {bulk.NDJSON: {"schema": {"type": "string"}}}}},
)
def export_file(
    export_id: str,
    name: str,
    session: ClinicalSession,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
) -> StreamingResponse:
    """One NDJSON file of the manifest, decrypted as it streams (audited first)."""
    file = bulk.open_file(
        session=session,
        principal=principal,
        export_id=uuid_or_404(export_id, "bulk export"),
        name=name,
        context=context,
    )
    audit.commit_or_refuse(session)  # no audit, no bytes
    return StreamingResponse(
        bulk.read_file(runtime, file),
        media_type=bulk.NDJSON,
        headers={
            "Content-Length": str(file.size),
            "ETag": f'"{file.sha256}"',
            "Cache-Control": "private, no-store",
        },
    )
