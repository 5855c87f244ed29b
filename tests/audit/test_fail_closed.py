"""No audit, no access: if the audit event cannot be written, nothing is served."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text

from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_multipart
from tests.support.inspect import stored_state


def break_audit_log(runtime: Runtime) -> None:
    with runtime.clinical.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_offline"))


def restore_audit_log(runtime: Runtime) -> None:
    with runtime.clinical.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events_offline RENAME TO audit_events"))


def test_reads_and_writes_fail_with_503_when_auditing_fails(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    doc = upload_multipart(client, patient, pdf_bytes()).json()
    before = stored_state(runtime)
    break_audit_log(runtime)
    try:
        for response in (
            client.get(f"/api/v1/documents/{doc['id']}/content"),
            client.get(f"/api/v1/documents/{doc['id']}"),
            client.get("/api/v1/documents"),
            client.post(f"/api/v1/documents/{doc['id']}/download-url"),
            upload_multipart(client, patient, pdf_bytes()),
        ):
            assert response.status_code == 503, response.request.url
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:medvault:problem:service-unavailable"
            assert b"%PDF" not in response.content
        assert stored_state(runtime) == before  # the failed upload left no blob behind
    finally:
        restore_audit_log(runtime)
    assert client.get(f"/api/v1/documents/{doc['id']}/content").status_code == 200
