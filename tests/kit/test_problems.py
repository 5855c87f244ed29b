"""Unexpected failures become an opaque problem; details stay in the server log."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from medvault.documents import service
from tests.support.factories import create_patient, pdf_bytes, upload_multipart


def test_internal_errors_are_opaque_problems(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    doc = upload_multipart(client, create_patient(client), pdf_bytes()).json()

    def explode(**_: object) -> None:
        raise RuntimeError("internal detail: /srv/secret/path")

    monkeypatch.setattr(service, "get", explode)
    with caplog.at_level(logging.ERROR):
        response = client.get(f"/api/v1/documents/{doc['id']}")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:medvault:problem:internal-error"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert any("internal detail" in str(r.exc_info) for r in caplog.records if r.exc_info)


@pytest.mark.parametrize(
    ("driver_message", "status", "slug"),
    [
        ("database is locked", 503, "database-unavailable"),
        ("connection refused", 503, "database-unavailable"),
        # A statement SQLite cannot run is a bug, not an outage to retry.
        ("no such table: documents", 500, "internal-error"),
    ],
)
def test_database_outages_are_503s_and_broken_statements_are_not(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    driver_message: str,
    status: int,
    slug: str,
) -> None:
    doc = upload_multipart(client, create_patient(client), pdf_bytes()).json()
    cause: Exception = (
        sqlite3.OperationalError(driver_message)
        if "connection" not in driver_message
        else ConnectionRefusedError(driver_message)
    )

    def fail(**_: object) -> None:
        raise OperationalError("SELECT 1", None, cause)

    monkeypatch.setattr(service, "get", fail)
    response = client.get(f"/api/v1/documents/{doc['id']}")
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"urn:medvault:problem:{slug}"
    assert ("Retry-After" in response.headers) == (status == 503)
    assert driver_message not in response.text


def test_every_problem_type_is_documented() -> None:
    """docs/problems.md has a section for each type a client can meet."""
    import medvault.app  # noqa: F401  (imports every domain, so every Problem subclass)
    from medvault.kit.problems import Problem

    docs = (Path(__file__).resolve().parents[2] / "docs" / "problems.md").read_text()
    seen: set[str] = set()
    pending: list[type[Problem]] = [Problem]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        seen.add(cls.slug)
    missing = sorted(slug for slug in seen if f"### {slug}\n" not in docs)
    assert not missing, f"problem types without a section in docs/problems.md: {missing}"
