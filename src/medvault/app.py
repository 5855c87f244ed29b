"""Application factory: wiring, middleware and routers. No domain logic here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from medvault import __version__
from medvault.config import Settings
from medvault.documents.router import router as documents_router
from medvault.kit.problems import install_problem_handlers
from medvault.kit.request_id import RequestIdMiddleware
from medvault.ops.health import router as health_router
from medvault.patients.router import router as patients_router
from medvault.runtime import Runtime, build_runtime
from medvault.shares.router import router as shares_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the ASGI app. Migrations run here, so ``serve`` needs no separate step."""
    if runtime is None:
        runtime = build_runtime(settings or Settings(), run_migrations=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info(
            "medvault %s ready: clinical=%s auth=%s blobs=%s",
            __version__,
            runtime.clinical.redacted_url(),
            runtime.auth.redacted_url(),
            runtime.blobs.describe(),
        )
        yield
        runtime.close()

    app = FastAPI(
        title="medvault",
        version=__version__,
        summary="Encrypted, audited clinical document vault",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    for router in (health_router, patients_router, documents_router, shares_router):
        app.include_router(router)
    return app
