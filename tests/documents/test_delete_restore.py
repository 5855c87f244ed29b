"""Soft delete and restore."""

from __future__ import annotations

from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_multipart
from tests.support.inspect import audit_events, stored_state


def test_soft_delete_then_restore(client: TestClient, runtime: Runtime) -> None:
    content = pdf_bytes()
    doc = upload_multipart(client, create_patient(client), content).json()
    deleted = client.delete(
        f"/api/v1/documents/{doc['id']}", params={"reason": "filed to the wrong patient"}
    )
    assert deleted.status_code == 200
    body = deleted.json()
    assert body["status"] == "deleted"
    assert body["delete_reason"] == "filed to the wrong patient"
    assert body["deleted_by"].startswith("api_token:") and body["deleted_at"]

    for path in ("content", "versions/1/content"):
        gone = client.get(f"/api/v1/documents/{doc['id']}/{path}")
        assert gone.status_code == 410
        assert gone.json()["type"] == "urn:medvault:problem:document-deleted"
    assert client.post(f"/api/v1/documents/{doc['id']}/download-url").status_code == 410
    assert client.get(f"/api/v1/documents/{doc['id']}").json()["status"] == "deleted"
    assert stored_state(runtime).blobs == 1  # soft: the encrypted blob is kept

    again = client.delete(f"/api/v1/documents/{doc['id']}", params={"reason": "twice"})
    assert again.status_code == 409

    restored = client.post(f"/api/v1/documents/{doc['id']}/restore")
    assert restored.status_code == 200
    assert restored.json()["status"] == "current" and restored.json()["delete_reason"] is None
    assert client.get(f"/api/v1/documents/{doc['id']}/content").content == content
    assert client.post(f"/api/v1/documents/{doc['id']}/restore").status_code == 409

    (event,) = audit_events(runtime, "document.delete", outcome="success")
    assert event.details == {"reason": "filed to the wrong patient"}
    assert len(audit_events(runtime, "document.restore", outcome="success")) == 1
    # The refused second delete and restore are audited as the attempts they were.
    assert len(audit_events(runtime, "document.delete", outcome="failure")) == 1
    assert len(audit_events(runtime, "document.restore", outcome="failure")) == 1
