"""Helpers for the bulk export tests: kick-off, run the export job, read the manifest."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.audit.models import AuditEvent
from medvault.jobs import build_registry
from medvault.processing import kinds
from medvault.processing.worker import JobRegistry, Worker
from medvault.runtime import Runtime

PREFER = {"Prefer": "respond-async"}


def kick_off(client: TestClient, *, level: str = "patient", **params: str) -> str:
    """Start an export; returns its status URL (absolute, as the server gave it)."""
    path = "/fhir/$export" if level == "system" else "/fhir/Patient/$export"
    response = client.get(path, params=params, headers=PREFER)
    assert response.status_code == 202, response.text
    return str(response.headers["Content-Location"])


def run_exports(runtime: Runtime) -> int:
    """Run the due export jobs only (not the scans and previews the uploads enqueued)."""
    export = build_registry(runtime).kinds[kinds.FHIR_BULK_EXPORT]
    worker = Worker(runtime.clinical, JobRegistry({export.name: export}))
    ran = 0
    while worker.run_one():
        ran += 1
    return ran


def manifest_of(client: TestClient, runtime: Runtime, status_url: str) -> dict[str, Any]:
    run_exports(runtime)
    response = client.get(status_url)
    assert response.status_code == 200, response.text
    return dict(response.json())


def download(client: TestClient, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        response = client.get(item["url"])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) == item["count"]
        found.setdefault(item["type"], []).extend(lines)
    return found


def export(client: TestClient, runtime: Runtime, **params: str) -> dict[str, list[dict[str, Any]]]:
    """Kick-off, run, download: the resources by type."""
    return download(client, manifest_of(client, runtime, kick_off(client, **params)))


def events(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.clinical.read_session() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )
