"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from medvault.access.policy import Permission, require
from medvault.deps import CurrentPrincipal, RuntimeDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive. Says nothing about its dependencies."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Both databases answer and the blob store is reachable and writable."""
    checks: dict[str, Any] = {}
    for name, probe in (
        ("clinical_database", runtime.clinical.ping),
        ("auth_database", runtime.auth.ping),
        ("blob_store", runtime.blobs.check),
    ):
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except Exception as exc:
            # Type only: driver messages can carry hostnames and user names.
            logger.warning("readiness check %s failed: %s", name, type(exc).__name__)
            checks[name] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
def metrics(principal: CurrentPrincipal) -> Response:
    """Prometheus metrics, for operators (counters reveal activity patterns)."""
    require(principal, Permission.METRICS_READ)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
