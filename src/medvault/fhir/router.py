"""The FHIR R4 interface at ``/fhir``: metadata, transactions, and each resource's routes.

Errors anywhere under ``/fhir`` are OperationOutcomes (``install`` registers the
renderer); the problem itself is decided exactly as for the REST API.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from medvault.access.policy import require_upload
from medvault.deps import AuditCtx, CurrentPrincipal, RuntimeDep, UploadRateLimit
from medvault.fhir import transaction
from medvault.fhir.base import FHIR_PATH, base_url
from medvault.fhir.routes import audit_event, binary, bulk_export, document_reference, patient
from medvault.fhir.wire.capability import capability_statement
from medvault.fhir.wire.http import require_json
from medvault.fhir.wire.responses import fhir_response, negotiate, render_operation_outcome
from medvault.kit.problem_handlers import register_problem_renderer

router = APIRouter(prefix=FHIR_PATH, tags=["fhir"])


@router.get("/metadata")
def metadata(request: Request, runtime: RuntimeDep) -> Response:
    """The CapabilityStatement; public, as FHIR clients read it before authenticating."""
    media_type = negotiate(request)
    statement = capability_statement(
        base=base_url(request, runtime.settings), settings=runtime.settings
    )
    return fhir_response(statement, media_type=media_type)


@router.post("")
async def transaction_bundle(
    request: Request,
    principal: CurrentPrincipal,
    context: AuditCtx,
    runtime: RuntimeDep,
    _rate: UploadRateLimit,
) -> Response:
    """A transaction Bundle of Binary and DocumentReference creates: all or nothing."""
    media_type = negotiate(request)
    require_json(request)
    require_upload(principal, patient_self_upload=runtime.settings.patient_self_upload)
    response = await transaction.process(
        runtime=runtime,
        principal=principal,
        context=context,
        body=request.stream(),
        base=base_url(request, runtime.settings),
    )
    return fhir_response(response, media_type=media_type)


# Before Patient's: /Patient/$export must not be read as the Patient with id "$export".
router.include_router(bulk_export.router)
router.include_router(document_reference.router)
router.include_router(binary.router)
router.include_router(patient.router)
router.include_router(audit_event.router)


def install(app: FastAPI) -> None:
    """Mount the FHIR interface and answer its errors as OperationOutcomes."""
    register_problem_renderer(app, FHIR_PATH, render_operation_outcome)
    app.include_router(router)
