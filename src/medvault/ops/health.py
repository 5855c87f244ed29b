"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from medvault.access.policy import Permission, require
from medvault.deps import CurrentPrincipal, RuntimeDep, get_rate_limits
from medvault.ops.server_processes import METRICS_ENV
from medvault.processing.clamd import ClamdClient
from medvault.processing.monitoring import queue_health
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive. Says nothing about its dependencies."""
    return {"status": "ok"}


# Readiness must answer while a dependency hangs: a probe waits this long, no more.
PROBE_TIMEOUT_SECONDS = 2.0


def _optional_probes(request: Request, runtime: Runtime) -> list[tuple[str, Callable[[], None]]]:
    """Shared services the vault works without, for a while: reported, not required."""
    probes: list[tuple[str, Callable[[], None]]] = []
    settings = runtime.settings
    if settings.redis_url:
        limits = get_rate_limits(request, runtime)

        def redis() -> None:
            if not limits.storage.check():
                raise ConnectionError("redis did not answer PING")

        probes.append(("redis", redis))
    if settings.clamd_url:
        scanner = ClamdClient(settings.clamd_url, timeout=PROBE_TIMEOUT_SECONDS)

        def clamd() -> None:
            if not scanner.ping():
                raise ConnectionError("clamd did not answer PING")

        probes.append(("clamd", clamd))
    return probes


async def _probe(checks: dict[str, Any], name: str, probe: Callable[[], None]) -> None:
    try:
        await run_in_threadpool(probe)
        checks[name] = "ok"
    except Exception as exc:
        # Type only: driver messages can carry hostnames and user names.
        logger.warning("readiness check %s failed: %s", name, type(exc).__name__)
        checks[name] = "unavailable"


@router.get("/readyz", responses={503: {"description": "A dependency is unreachable"}})
async def readyz(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """The three databases answer and the blob store is reachable and writable (else 503).

    Redis and clamd, when configured, are reported but not required: every instance
    shares them, so taking instances out of a load balancer for their sake would turn
    a partial outage (no logins, scans waiting) into a total one. Their outage makes
    the status "degraded", as stalled workers do.
    """
    checks: dict[str, Any] = {}
    for name, probe in (
        ("clinical_database", runtime.clinical.ping),
        ("auth_database", runtime.auth.ping),
        ("patient_database", runtime.patients.ping),
        ("blob_store", runtime.blobs.check),
    ):
        await _probe(checks, name, probe)
    ready = all(value == "ok" for value in checks.values())
    optional: dict[str, Any] = {}
    for name, probe in _optional_probes(request, runtime):
        await _probe(optional, name, probe)
    checks.update(optional)
    degraded = any(value != "ok" for value in optional.values())
    body: dict[str, Any] = {
        "status": ("degraded" if degraded else "ready") if ready else "unavailable",
        "checks": checks,
    }
    if ready:
        # Workers are reported, not required: reads and uploads go on without them, so
        # taking web instances out of a load balancer would only make things worse.
        # "degraded" tells the operator that due jobs wait and no worker is alive.
        try:
            health = await run_in_threadpool(queue_health, runtime.clinical)
        except Exception as exc:
            logger.warning("readiness check jobs failed: %s", type(exc).__name__)
        else:
            body["workers"] = {
                "alive": health.workers_alive,
                "due_jobs": health.due,
                "oldest_due_seconds": round(health.oldest_due_seconds, 1),
                "dead_jobs": health.dead,
            }
            if health.stalled:
                body["status"] = "degraded"
                checks["workers"] = "stalled"
            else:
                checks["workers"] = "ok"
    return JSONResponse(body, status_code=200 if ready else 503)


class _Snapshot(Collector):
    """Metrics read for this scrape only (the queue's gauges)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _process_metrics() -> bytes:
    """Counters and histograms of every server process on this host.

    ``medvault serve --workers N`` sets PROMETHEUS_MULTIPROC_DIR for its processes, so
    each records into files there and any of them can answer for all; a single
    process answers from its own registry.
    """
    if not os.environ.get(METRICS_ENV):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    return generate_latest(registry)


@router.get("/metrics", response_class=Response)
def metrics(principal: CurrentPrincipal, runtime: RuntimeDep) -> Response:
    """Prometheus metrics, for operators (counters reveal activity patterns)."""
    require(principal, Permission.METRICS_READ)
    # The queue's gauges are read from the table now, so any instance reports them all.
    snapshot = CollectorRegistry()
    snapshot.register(_Snapshot(queue_health(runtime.clinical).metric_families()))
    return Response(_process_metrics() + generate_latest(snapshot), media_type=CONTENT_TYPE_LATEST)
