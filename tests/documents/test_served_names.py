"""Issue 9, defect 6: the stored and served name's extension follows the sniffed type.

A PDF/HTML polyglot sent as ``poly.html`` (or ``.hta``, which Windows would run) is
stored as application/pdf; it must also be named and downloaded as ``.pdf``.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from medvault.documents.filenames import sanitize_filename, served_filename
from medvault.documents.models import DocumentVersion
from medvault.runtime import Runtime
from tests.fhir.support import document_reference, post_resource
from tests.support.factories import create_patient, pdf_bytes, upload_multipart, upload_raw

POLYGLOT = (
    pdf_bytes(4096) + b"\n<html><body><script>alert(document.domain)</script></body></html>\n"
)


def _served_name(client: TestClient, doc_id: str) -> str:
    response = client.get(f"/api/v1/documents/{doc_id}/content")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    return str(response.headers["content-disposition"])


@pytest.mark.parametrize("name", ["poly.html", "poly.hta"])
@pytest.mark.parametrize("face", ["multipart", "raw"])
def test_rest_upload_of_a_polyglot_is_stored_and_served_as_pdf(
    client: TestClient, name: str, face: str
) -> None:
    patient = create_patient(client)
    upload = upload_multipart if face == "multipart" else upload_raw
    response = upload(client, patient, POLYGLOT, filename=name)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == "application/pdf"
    assert body["filename"] == "poly.pdf"
    assert body["original_filename"] == name  # the client's name stays visible to people
    disposition = _served_name(client, body["id"])
    assert 'filename="poly.pdf"' in disposition and "filename*=UTF-8''poly.pdf" in disposition


@pytest.mark.parametrize("name", ["poly.html", "poly.hta"])
def test_fhir_binary_and_document_reference_serve_pdf_names(client: TestClient, name: str) -> None:
    patient = create_patient(client)
    binary = client.post(
        "/fhir/Binary",
        content=POLYGLOT,
        headers={"content-type": "application/pdf", "X-Security-Context": f"Patient/{patient}"},
    )
    assert binary.status_code == 201, binary.text
    got = client.get(f"/fhir/Binary/{binary.json()['id']}", headers={"accept": "*/*"})
    assert got.status_code == 200
    assert got.headers["content-disposition"].endswith(".pdf")

    # Other bytes than the Binary above: the same bytes would be a duplicate.
    resource = document_reference(patient, POLYGLOT + b"\n%second")
    resource["content"][0]["attachment"]["title"] = name
    created = post_resource(client, "/fhir/DocumentReference", resource)
    assert created.status_code == 201, created.text
    doc_id = created.json()["id"]
    rest = client.get(f"/api/v1/documents/{doc_id}").json()
    assert rest["filename"].endswith(".pdf")
    assert _served_name(client, doc_id).endswith(".pdf")


def test_a_legacy_row_named_html_is_served_as_pdf(client: TestClient, runtime: Runtime) -> None:
    """Rows stored before the rule keep their name in the database; the download fixes it."""
    patient = create_patient(client)
    doc_id = upload_raw(client, patient, POLYGLOT, filename="poly.pdf").json()["id"]
    with runtime.clinical.session() as session:
        session.execute(
            update(DocumentVersion)
            .where(DocumentVersion.document_id == uuid.UUID(doc_id))
            .values(filename="poly.hta")
        )
        session.commit()
    disposition = _served_name(client, doc_id)
    assert 'filename="poly.pdf"' in disposition and ".hta" not in disposition
    assert client.get(f"/api/v1/documents/{doc_id}").json()["filename"] == "poly.pdf"
    versions = client.get(f"/api/v1/documents/{doc_id}/versions").json()
    assert all(v["filename"] == "poly.pdf" for v in versions["items"])


@pytest.mark.parametrize(
    ("given", "extension", "stored"),
    [
        ("poly.html", ".pdf", "poly.pdf"),
        ("poly.HTA", ".pdf", "poly.pdf"),
        ("scan.jpeg", ".jpg", "scan.jpeg"),
        ("scan.JPG", ".jpg", "scan.JPG"),
        ("scan.tiff", ".tif", "scan.tiff"),
        ("Scan 12.03.2024", ".pdf", "Scan 12.03.2024.pdf"),
        ("letter", ".pdf", "letter.pdf"),
        ("", ".pdf", "document.pdf"),
        ("../../etc/passwd.html", ".pdf", "passwd.pdf"),
        ("notes.txt", "", "notes"),
    ],
)
def test_the_extension_rule(given: str, extension: str, stored: str) -> None:
    assert sanitize_filename(given, extension=extension) == stored


def test_long_names_keep_the_right_extension_within_255_bytes() -> None:
    name = sanitize_filename("é" * 400 + ".html", extension=".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= 255
    assert served_filename(name, "application/pdf") == name  # idempotent on read
