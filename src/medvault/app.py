"""Application factory: wiring, middleware and routers. No domain logic here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from medvault import __version__
from medvault.access.router import router as care_teams_router
from medvault.audit.router import access_history_router, audit_denial
from medvault.audit.router import router as audit_router
from medvault.audit.sealer import start_sealer
from medvault.auth.router import admin_router
from medvault.auth.router import router as auth_router
from medvault.config import Settings
from medvault.documents.preview_router import router as preview_router
from medvault.documents.quarantine_router import router as quarantine_router
from medvault.documents.router import router as documents_router
from medvault.fhir import openapi as fhir_openapi
from medvault.fhir.router import install as install_fhir
from medvault.governance.export_router import router as exports_router
from medvault.governance.router import router as governance_router
from medvault.jobs import start_worker
from medvault.kit.i18n import N_
from medvault.kit.problem_handlers import answer_outage, install_problem_handlers
from medvault.kit.problems import StorageUnavailable
from medvault.kit.request_id import RequestIdMiddleware
from medvault.kit.request_text import refuse_control_characters
from medvault.ops.access_log import AccessLogMiddleware
from medvault.ops.health import router as health_router
from medvault.ops.log_policy import apply_log_policy
from medvault.ops.openapi import install_openapi
from medvault.ops.openapi_routes import rest_constraints, rest_specials
from medvault.ops.read_fences import ReadFenceMiddleware
from medvault.ops.request_limits import RequestLimitsMiddleware
from medvault.ops.security_headers import SecurityHeadersMiddleware
from medvault.patients.router import router as patients_router
from medvault.runtime import Runtime, build_runtime
from medvault.shares.router import router as shares_router
from medvault.storage.base import BlobExists, BlobNotFound, BlobStoreError
from medvault.storage.filesystem import FilesystemBlobStore
from medvault.uploads.router import router as uploads_router
from medvault.web import install_portal
from medvault.web.language import LanguageMiddleware

logger = logging.getLogger(__name__)

STALE_TEMP_SECONDS = 3600


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    run_sealer: bool = False,
    run_worker: bool = False,
) -> FastAPI:
    """Build the ASGI app. Migrations run here, so ``serve`` needs no separate step.

    ``run_sealer`` starts the audit sealer as a background task and ``run_worker`` one
    job worker thread (``medvault serve`` does both, the worker unless
    ``MEDVAULT_EMBEDDED_WORKER=false``); tests run both explicitly so their expectations
    stay deterministic.
    """
    apply_log_policy()  # before any connection is opened: SQLAlchemy reads it per connection
    if runtime is None:
        runtime = build_runtime(settings or Settings(), run_migrations=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if isinstance(runtime.blobs, FilesystemBlobStore):
            # Temp files older than this belong to writers that died with a crash.
            swept = runtime.blobs.sweep_incomplete(older_than_seconds=STALE_TEMP_SECONDS)
            if swept:
                logger.warning("removed %d stale partial uploads", swept)
        logger.info(
            "medvault %s ready: clinical=%s auth=%s patients=%s blobs=%s",
            __version__,
            runtime.clinical.redacted_url(),
            runtime.auth.redacted_url(),
            runtime.patients.redacted_url(),
            runtime.blobs.describe(),
        )
        sealer = start_sealer(runtime) if run_sealer else None
        worker = start_worker(runtime) if run_worker else None
        try:
            yield
        finally:
            if worker is not None:
                await to_thread.run_sync(worker.stop)
            if sealer is not None:
                await sealer.stop()
            runtime.close()

    app = FastAPI(
        title="medvault",
        version=__version__,
        summary="Encrypted, audited clinical document vault",
        lifespan=lifespan,
        # Every route, on every face: no control characters in the path or query.
        dependencies=[Depends(refuse_control_characters)],
    )
    app.state.runtime = runtime
    install_problem_handlers(app, observer=audit_denial)
    # A store that is down (unreachable, timing out) wherever a route meets it: 503.
    # A missing or clashing blob is not an outage and stays a 500.
    answer_outage(
        app,
        BlobStoreError,
        lambda: StorageUnavailable(N_("The document store did not answer; try again shortly.")),
        outage=lambda exc: not isinstance(exc, BlobNotFound | BlobExists),
    )
    if runtime.settings.cors_origins:
        # Off unless an allowlist is configured; bearer tokens, so no cookies cross origins.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(runtime.settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Range",
                "If-None-Match",
                "If-Range",
                "X-Break-Glass-Reason",
                "X-Request-Id",
                # FHIR: version-aware updates, Prefer, and a Binary's security context.
                "If-Match",
                "Prefer",
                "X-Security-Context",
                # tus resumable uploads (uploads.router).
                "Tus-Resumable",
                "Upload-Length",
                "Upload-Defer-Length",
                "Upload-Offset",
                "Upload-Metadata",
                "Upload-Checksum",
                # Read-after fences (ops.read_fences), with a read replica.
                "MedVault-Read-After",
            ],
            expose_headers=[
                "ETag",
                "Content-Range",
                "Content-Disposition",
                "X-Request-Id",
                "Retry-After",
                "Location",
                "Repr-Digest",
                "Last-Modified",
                "Tus-Resumable",
                "Tus-Version",
                "Tus-Extension",
                "Tus-Checksum-Algorithm",
                "Upload-Offset",
                "Upload-Length",
                "Upload-Defer-Length",
                "Upload-Metadata",
                "Upload-Expires",
                "Medvault-Document-Id",
                "MedVault-Read-After",
            ],
            max_age=600,
        )
    if runtime.clinical_replica is not None:
        # Inside our other middleware: it sees the status the route answered with.
        app.add_middleware(ReadFenceMiddleware, replica=runtime.clinical_replica)
    # Innermost of ours: its early 413/431 answers still get security headers and a log line.
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=runtime.settings.max_json_body_bytes,
        max_header_bytes=runtime.settings.max_header_bytes,
    )
    # The portal's words follow the visitor's language (web.language); the API's stay English.
    app.add_middleware(LanguageMiddleware, default=runtime.settings.portal_language)
    app.add_middleware(SecurityHeadersMiddleware)
    # Starlette runs the last-added middleware outermost: the request id is set before
    # the access log line and every audit event need it.
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
    for router in (
        health_router,
        auth_router,
        admin_router,
        care_teams_router,
        audit_router,
        access_history_router,
        patients_router,
        documents_router,
        preview_router,
        quarantine_router,
        shares_router,
        uploads_router,
        governance_router,
        exports_router,
    ):
        app.include_router(router)
    # Before the portal: its pages and error renderer sit at "/", FHIR at "/fhir".
    install_fhir(app)
    install_portal(app)
    # Last: the document describes every route above, with every answer it can give.
    install_openapi(
        app,
        specials={**rest_specials(), **fhir_openapi.fhir_specials()},
        dialects=(fhir_openapi.dialect(),),
        constraints=rest_constraints(runtime.settings),
    )
    return app
