"""Uploading documents and versions, multipart and raw, on both backends."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.support.factories import (
    create_patient,
    pdf_bytes,
    png_bytes,
    upload_multipart,
    upload_raw,
)
from tests.support.inspect import audit_actions, stored_state


def test_multipart_upload_returns_metadata(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    content = pdf_bytes(200_000)
    response = upload_multipart(
        client,
        patient,
        content,
        title="Full blood count",
        description="Synthetic",
        classification="restricted",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["patient_id"] == patient
    assert body["filename"] == "report.pdf"
    assert body["content_type"] == "application/pdf"
    assert body["size"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["classification"] == "restricted"
    assert body["title"] == "Full blood count"
    assert body["uploaded_by"].startswith("api_token:")
    assert response.headers["location"] == f"/api/v1/documents/{body['id']}"
    assert stored_state(runtime).blobs == 1
    assert "document.create" in audit_actions(runtime)


def test_raw_body_upload_is_the_same_document_shape(client: TestClient) -> None:
    patient = create_patient(client)
    content = pdf_bytes(300_000)
    response = upload_raw(
        client, patient, content, filename="discharge.pdf", title="Discharge summary"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["filename"] == "discharge.pdf"
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert client.get(f"/api/v1/documents/{body['id']}/content").content == content


def test_type_comes_from_magic_bytes_not_the_client(client: TestClient) -> None:
    patient = create_patient(client)
    response = upload_raw(
        client, patient, png_bytes(), filename="scan.pdf", content_type="application/pdf"
    )
    assert response.status_code == 201
    assert response.json()["content_type"] == "image/png"


def test_metadata_never_exposes_storage_details(client: TestClient) -> None:
    patient = create_patient(client)
    created = upload_multipart(client, patient, pdf_bytes()).json()
    for body in (
        created,
        client.get(f"/api/v1/documents/{created['id']}").json(),
        client.get("/api/v1/documents").json()["items"][0],
    ):
        text = str(body)
        assert "storage_key" not in body and "versions/" not in text
        assert "wrapped" not in text and "kek" not in text and "/tmp" not in text


def test_title_defaults_to_the_filename(client: TestClient) -> None:
    patient = create_patient(client)
    body = upload_raw(client, patient, pdf_bytes(), filename="clinic letter.pdf").json()
    assert body["title"] == "clinic letter.pdf"


def test_filenames_are_sanitised_and_the_original_kept(client: TestClient) -> None:
    patient = create_patient(client)
    # Control characters are refused outright (issue 9); format characters such as a
    # bidi override are stripped from the stored name.
    refused = upload_raw(client, patient, pdf_bytes(), filename="passwd\x00\x07letter.pdf")
    assert refused.status_code == 422
    nasty = "../../etc/\u202epasswdCafe\u0301 letter.pdf"
    body = upload_raw(client, patient, pdf_bytes(), filename=nasty).json()
    assert body["filename"] == "passwdCaf\u00e9 letter.pdf"
    assert "/" not in body["filename"] and "\u202e" not in body["filename"]
    assert body["original_filename"].startswith("../../etc/")
    traversal = upload_multipart(client, patient, pdf_bytes(), filename="..\\..\\x.pdf").json()
    assert traversal["filename"] == "x.pdf"
    long_name = "a" * 400 + ".pdf"
    body = upload_raw(client, patient, pdf_bytes(), filename=long_name).json()
    assert len(body["filename"].encode()) <= 255 and body["filename"].endswith(".pdf")


def test_fields_after_the_file_part_are_accepted(client: TestClient) -> None:
    patient = create_patient(client)
    boundary = "medvaultboundary"
    content = pdf_bytes(5000)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.pdf"\r\n'
            f"Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + content
        + (
            f"\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="patient_id"\r\n\r\n{patient}'
            f"\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="document_type"\r\n\r\n18842-5'
            f"\r\n--{boundary}--\r\n"
        ).encode()
    )
    response = client.post(
        "/api/v1/documents",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["document_type"] == "18842-5"


def test_new_version_keeps_the_old_one(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    first, second = pdf_bytes(70_000), pdf_bytes(90_000)
    doc = upload_multipart(client, patient, first).json()
    response = client.post(
        f"/api/v1/documents/{doc['id']}/versions",
        files={"file": ("v2.pdf", second, "application/pdf")},
    )
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2
    assert response.json()["filename"] == "v2.pdf"
    versions = client.get(f"/api/v1/documents/{doc['id']}/versions").json()["items"]
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["sha256"] for v in versions] == [
        hashlib.sha256(second).hexdigest(),
        hashlib.sha256(first).hexdigest(),
    ]
    assert client.get(f"/api/v1/documents/{doc['id']}/content").content == second
    assert client.get(f"/api/v1/documents/{doc['id']}/versions/1/content").content == first
    raw = client.post(
        f"/api/v1/documents/{doc['id']}/versions",
        params={"filename": "v3.pdf"},
        content=pdf_bytes(1000),
        headers={"content-type": "application/pdf"},
    )
    assert raw.status_code == 201 and raw.json()["version"] == 3
    assert stored_state(runtime).blobs == 3
    assert audit_actions(runtime).count("document.version.create") == 2


def test_duplicate_content_for_the_same_patient_is_a_conflict(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    content = pdf_bytes()
    original = upload_multipart(client, patient, content).json()
    before = stored_state(runtime)
    duplicate = upload_multipart(client, patient, content)
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert duplicate.json()["type"] == "urn:medvault:problem:duplicate-document"
    assert duplicate.json()["existing_document_id"] == original["id"]
    assert stored_state(runtime) == before

    allowed = upload_multipart(client, patient, content, on_duplicate="allow")
    assert allowed.status_code == 201 and allowed.json()["id"] != original["id"]

    as_version = upload_raw(client, patient, content, on_duplicate="new_version")
    assert as_version.status_code == 201
    assert as_version.json()["id"] in {original["id"], allowed.json()["id"]}
    assert as_version.json()["version"] == 2


def test_same_bytes_for_another_patient_is_not_a_duplicate(client: TestClient) -> None:
    content = pdf_bytes()
    assert upload_multipart(client, create_patient(client), content).status_code == 201
    assert upload_multipart(client, create_patient(client), content).status_code == 201


def test_a_deleted_document_does_not_count_as_a_duplicate(client: TestClient) -> None:
    patient = create_patient(client)
    content = pdf_bytes()
    doc = upload_multipart(client, patient, content).json()
    client.delete(f"/api/v1/documents/{doc['id']}", params={"reason": "entered in error"})
    assert upload_multipart(client, patient, content).status_code == 201


def test_no_plaintext_byte_reaches_the_blob_store(client: TestClient, runtime: Runtime) -> None:
    marker = b"SYNTHETIC-CLINICAL-MARKER-" * 4000
    content = b"%PDF-1.7\n" + marker
    upload_raw(client, create_patient(client), content)
    upload_multipart(client, create_patient(client), content)
    blobs = list(runtime.blobs.list_blobs())
    assert len(blobs) == 2
    for info in blobs:
        stored = b"".join(runtime.blobs.read(info.key))
        assert len(stored) > len(content)
        assert b"SYNTHETIC-CLINICAL" not in stored and b"%PDF" not in stored
