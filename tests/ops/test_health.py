"""Health, readiness and the access log."""

import logging
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.db.engine import Database
from medvault.runtime import Runtime
from medvault.storage.factory import open_blob_store
from medvault.storage.filesystem import FilesystemBlobStore


def test_healthz_needs_no_token(anon_client: TestClient) -> None:
    response = anon_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_every_dependency(anon_client: TestClient) -> None:
    response = anon_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "clinical_database": "ok",
        "auth_database": "ok",
        "patient_database": "ok",
        "blob_store": "ok",
        # Nothing is waiting, so no worker is needed (tests/processing covers "stalled").
        "workers": "ok",
    }


def test_readyz_is_503_when_a_dependency_is_down(app: FastAPI, runtime: Runtime) -> None:
    runtime.clinical = Database("postgresql+psycopg://postgres@127.0.0.1:1/unreachable")
    with TestClient(app) as anon:
        response = anon.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["clinical_database"] == "unavailable"
    assert checks["auth_database"] == "ok"
    assert checks["patient_database"] == "ok"
    assert "127.0.0.1:1" not in response.text


def test_readyz_is_503_when_the_blob_store_is_gone(
    app: FastAPI, runtime: Runtime, tmp_path: Path
) -> None:
    if isinstance(runtime.blobs, FilesystemBlobStore):
        shutil.rmtree(runtime.blobs.root)
    else:
        runtime.blobs = open_blob_store(
            "s3://no-such-bucket/x",
            s3_endpoint_url=runtime.settings.s3_endpoint_url,
            s3_region="us-east-1",
        )
    with TestClient(app) as anon:
        response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["blob_store"] == "unavailable"


def test_readyz_reports_redis_and_clamd_without_requiring_them(
    app: FastAPI, runtime: Runtime
) -> None:
    """Shared by every instance, so their outage degrades readiness and never fails it
    (tests/e2e/test_failure_drills.py stops and restarts real ones)."""
    runtime.settings = runtime.settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "clamd_url": "tcp://127.0.0.1:1"}
    )
    with TestClient(app) as anon:
        response = anon.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"] == "unavailable"
    assert body["checks"]["clamd"] == "unavailable"
    assert body["checks"]["clinical_database"] == "ok"
    assert "127.0.0.1:1" not in response.text


def test_access_log_has_no_query_strings_or_tokens(
    client: TestClient, api_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="medvault.access")
    client.get(
        "/api/v1/patients", params={"identifier": "https://fhir.nhs.uk/Id/nhs-number|9434765919"}
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "medvault.access"]
    assert lines and lines[0].startswith("GET /api/v1/patients 200")
    assert "request_id=" in lines[0]
    joined = "\n".join(r.getMessage() for r in caplog.records)
    assert "9434765919" not in joined and api_token not in joined


def test_healthy_probes_stay_out_of_the_info_log(
    anon_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="medvault.access")
    assert anon_client.get("/healthz").status_code == 200
    assert anon_client.get("/api/v1/documents").status_code == 401
    levels = {
        record.getMessage().split(" ")[1]: record.levelno
        for record in caplog.records
        if record.name == "medvault.access"
    }
    assert levels == {"/healthz": logging.DEBUG, "/api/v1/documents": logging.INFO}
