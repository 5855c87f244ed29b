"""One redaction rule for every log line that carries a path (issue 9, defect 3).

The access log used to redact signed-link paths while the unhandled-error handler
logged ``request.url.path`` raw: a signed download link with a ``Range`` of 5,000
digits crashed the int conversion and wrote the link's credential to the log.
"""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.kit.redaction import loggable_path
from tests.support.factories import create_patient, pdf_bytes, upload_raw

SECRET_LIKE = "mvs_Zq8xR2kLp0vN7tYbW4cJ9hF3dG6sA1eU5iO8mQ2rT"


# The test's own side of the wire: the HTTP client logs the URLs it requests, and
# moto (the S3 stand-in) its requests. Neither is part of the vault.
CLIENT_SIDE_LOGGERS = ("httpx", "httpcore", "werkzeug")


def server_side(records: list[logging.LogRecord]) -> str:
    """Every vault-side record as a handler would write it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(
        formatter.format(record)
        for record in records
        if record.name.split(".")[0] not in CLIENT_SIDE_LOGGERS
    )


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return server_side(caplog.records)


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/api/v1/download/abc.def-ghi", "/api/v1/download/<signed>"),
        ("/api/v1/download/", "/api/v1/download/<signed>"),
        ("/api/v1/documents?q=Smith", "/api/v1/documents"),
        (
            "/api/v1/documents/0b7b7f3e-6d0e-4d8e-9b8e-3f1c2d4e5f60/content",
            "/api/v1/documents/0b7b7f3e-6d0e-4d8e-9b8e-3f1c2d4e5f60/content",
        ),
        (f"/share/{SECRET_LIKE}/view", "/share/<redacted>/view"),
        ("/fhir/Patient", "/fhir/Patient"),
    ],
)
def test_loggable_path(path: str, logged: str) -> None:
    assert loggable_path(path) == logged


def test_overlong_paths_are_cut() -> None:
    assert len(loggable_path("/a" * 5000)) <= 201


def test_a_crashing_signed_link_never_logs_its_token(
    client: TestClient, anon_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    patient = create_patient(client)
    document = upload_raw(client, patient, pdf_bytes()).json()["id"]
    url = client.post(f"/api/v1/documents/{document}/download-url", json={}).json()["url"]
    path = url[url.index("/api/v1/download/") :]
    token = path.removeprefix("/api/v1/download/")
    assert len(token) > 20

    caplog.set_level(logging.DEBUG)  # root, and everything that propagates to it
    for logger in ("sqlalchemy", "uvicorn", "uvicorn.error", "medvault"):
        caplog.set_level(logging.DEBUG, logger=logger)
    answer = anon_client.get(path, headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert answer.status_code < 600  # whatever the answer, the log must stay clean

    logged = everything_logged(caplog)
    assert "/api/v1/download/<signed>" in logged  # the request was logged, redacted
    assert token not in logged
    assert token[:16] not in logged


def test_the_unhandled_error_handler_redacts_paths_and_queries(
    app: FastAPI, anon_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/test/explode/{anything}")
    def explode(anything: str) -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.DEBUG)
    answer = anon_client.get(f"/test/explode/{SECRET_LIKE}?identifier=9434765919")
    assert answer.status_code == 500
    assert answer.json()["type"] == "urn:medvault:problem:internal-error"

    logged = everything_logged(caplog)
    assert "unhandled error on GET /test/explode/<redacted>" in logged
    assert SECRET_LIKE not in logged
    assert "9434765919" not in logged


def test_the_disconnect_handler_redacts_signed_paths(
    app: FastAPI, anon_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.requests import ClientDisconnect

    @app.post("/api/v1/download/{token}/gone")
    def gone(token: str) -> None:
        raise ClientDisconnect()

    caplog.set_level(logging.DEBUG)
    anon_client.post(f"/api/v1/download/{SECRET_LIKE}/gone")
    logged = everything_logged(caplog)
    assert "client disconnected during POST /api/v1/download/<signed>" in logged
    assert SECRET_LIKE not in logged
