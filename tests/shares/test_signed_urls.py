"""Signed download links: tokenless, expiring, bound to a version, tamper-proof, audited."""

from __future__ import annotations

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.documents.models import DocumentVersion
from medvault.runtime import Runtime
from medvault.shares import signed_urls
from tests.support.factories import create_patient, pdf_bytes, upload_multipart
from tests.support.inspect import audit_events


@pytest.fixture
def doc(client: TestClient) -> tuple[str, bytes]:
    content = pdf_bytes(150_000)
    return upload_multipart(client, create_patient(client), content).json()["id"], content


def path_of(url: str) -> str:
    return url.split("testserver", 1)[1]


def test_link_works_without_a_token_and_is_audited(
    client: TestClient, anon_client: TestClient, runtime: Runtime, doc: tuple[str, bytes]
) -> None:
    doc_id, content = doc
    issued = client.post(f"/api/v1/documents/{doc_id}/download-url")
    assert issued.status_code == 201
    body = issued.json()
    assert body["url"].startswith("http://testserver/api/v1/download/")
    assert body["version"] == 1
    response = anon_client.get(path_of(body["url"]))
    assert response.status_code == 200 and response.content == content
    ranged = anon_client.get(path_of(body["url"]), headers={"Range": "bytes=5-9"})
    assert ranged.status_code == 206 and ranged.content == content[5:10]

    (issue,) = audit_events(runtime, "document.download_url.issue")
    uses = audit_events(runtime, "document.download_url.use")
    assert len(uses) == 2
    assert uses[0].details["link_id"] == issue.details["link_id"]
    assert uses[0].actor_id == f"signed_url:{issue.details['link_id']}"
    assert uses[0].details["issued_by"] == issue.actor_id


def test_default_expiry_is_one_hour_and_the_maximum_is_enforced(
    client: TestClient, doc: tuple[str, bytes]
) -> None:
    doc_id, _ = doc
    body = client.post(f"/api/v1/documents/{doc_id}/download-url").json()
    token = body["url"].rsplit("/", 1)[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    too_long = client.post(f"/api/v1/documents/{doc_id}/download-url", json={"expires_in": 86401})
    assert too_long.status_code == 422
    day = client.post(f"/api/v1/documents/{doc_id}/download-url", json={"expires_in": 86400})
    assert day.status_code == 201


def test_link_is_bound_to_one_version(
    client: TestClient, anon_client: TestClient, doc: tuple[str, bytes]
) -> None:
    doc_id, first = doc
    url = client.post(f"/api/v1/documents/{doc_id}/download-url").json()["url"]
    client.post(
        f"/api/v1/documents/{doc_id}/versions",
        files={"file": ("v2.pdf", pdf_bytes(), "application/pdf")},
    )
    assert anon_client.get(path_of(url)).content == first
    v1 = client.post(f"/api/v1/documents/{doc_id}/download-url", json={"version": 1}).json()
    assert v1["version"] == 1 and anon_client.get(path_of(v1["url"])).content == first


def test_altered_link_fails(
    client: TestClient, anon_client: TestClient, runtime: Runtime, doc: tuple[str, bytes]
) -> None:
    doc_id, _ = doc
    url = client.post(f"/api/v1/documents/{doc_id}/download-url").json()["url"]
    token = url.rsplit("/", 1)[1]
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] += 10_000
    forged_payload = jwt.encode(
        claims, "a-guessed-secret-of-32-bytes-len!", algorithm="HS256"
    ).split(".")[1]
    for bad in (
        f"{header}.{forged_payload}.{signature}",
        f"{header}.{payload}.{signature[:-2]}xx",
        token[:-1],
        "not-a-token",
        jwt.encode(claims, "a-guessed-secret-of-32-bytes-len!", algorithm="HS256"),
    ):
        response = anon_client.get(f"/api/v1/download/{bad}")
        assert response.status_code == 403, bad
        assert response.json()["type"] == "urn:medvault:problem:signed-url-invalid"
    assert audit_events(runtime, "document.download_url.use") == []


def test_expired_link_fails(
    anon_client: TestClient, runtime: Runtime, doc: tuple[str, bytes]
) -> None:
    with runtime.clinical.session() as session:
        version = session.scalars(select(DocumentVersion)).one()
    token, _ = signed_urls.sign(
        secret=runtime.secret_key,
        version_id=version.id,
        document_id=version.document_id,
        issued_by="test",
        ttl_seconds=-60,
    )
    response = anon_client.get(f"/api/v1/download/{token}")
    assert response.status_code == 403
    assert response.json()["type"] == "urn:medvault:problem:signed-url-expired"


def test_link_stops_working_when_the_document_is_deleted(
    client: TestClient, anon_client: TestClient, doc: tuple[str, bytes]
) -> None:
    doc_id, _ = doc
    url = client.post(f"/api/v1/documents/{doc_id}/download-url").json()["url"]
    client.delete(f"/api/v1/documents/{doc_id}", params={"reason": "withdrawn"})
    assert anon_client.get(path_of(url)).status_code == 410
