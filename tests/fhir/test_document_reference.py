"""DocumentReference read: the field mapping, versions, soft delete and the audit trail."""

from __future__ import annotations

import base64
import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import update

from medvault.documents.models import DocumentVersion
from medvault.runtime import Runtime
from tests.fhir.support import sha1_b64
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs


def test_a_document_maps_onto_every_field(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes(6000)
    doc = upload_raw(
        fhir,
        patient,
        content,
        title="Full blood count",
        description="Routine bloods",
        classification="restricted",
    ).json()
    run_due_jobs(runtime)  # the SHA-1 for attachment.hash is computed after the upload

    response = fhir.get(f"/fhir/DocumentReference/{doc['id']}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    resource = response.json()
    assert resource["id"] == doc["id"]
    assert resource["status"] == "current"
    assert resource["docStatus"] == "final"
    assert resource["type"]["coding"] == [
        {"system": "http://loinc.org", "code": "11502-2", "display": "Laboratory report"}
    ]
    assert resource["category"][0]["coding"][0]["code"] == "laboratory"
    assert resource["subject"] == {"reference": f"Patient/{patient}"}
    assert resource["description"] == "Routine bloods"
    assert resource["securityLabel"][0]["coding"][0]["code"] == "R"
    assert resource["author"][0]["identifier"]["value"] == doc["uploaded_by"]
    assert "relatesTo" not in resource
    attachment = resource["content"][0]["attachment"]
    assert attachment["contentType"] == "application/pdf"
    assert attachment["size"] == len(content)
    assert attachment["title"] == "Full blood count"
    assert attachment["hash"] == sha1_b64(content)
    assert attachment["extension"] == [
        {
            "url": "urn:medvault:fhir:attachment-sha256",
            "valueBase64Binary": base64.b64encode(hashlib.sha256(content).digest()).decode(),
        }
    ]
    assert attachment["url"].endswith(f"/fhir/Binary/{attachment['url'].rsplit('/', 1)[1]}")
    assert fhir.get(attachment["url"]).content == content
    # meta.versionId and the weak ETag name the same version.
    assert response.headers["etag"] == f'W/"{resource["meta"]["versionId"]}"'
    assert "last-modified" in response.headers
    # The same audit event as a REST read.
    events = audit_events(runtime, "document.read")
    assert [(e.resource_id, str(e.patient_id)) for e in events] == [(doc["id"], patient)]


def test_versions_are_superseded_and_replaced(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    second = pdf_bytes()
    added = fhir.post(
        f"/api/v1/documents/{doc['id']}/versions",
        content=second,
        headers={"content-type": "application/pdf"},
    )
    assert added.status_code == 201
    run_due_jobs(runtime)

    current = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()
    first = fhir.get(f"/fhir/DocumentReference/{doc['id']}.1").json()

    assert current["status"] == "current"
    assert current["relatesTo"] == [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{doc['id']}.1"}}
    ]
    assert current["content"][0]["attachment"]["hash"] == sha1_b64(second)
    assert first["id"] == f"{doc['id']}.1"
    assert first["status"] == "superseded"
    assert "relatesTo" not in first
    assert first["content"][0]["attachment"]["url"] != current["content"][0]["attachment"]["url"]
    # The current version has one id only: the document's own.
    assert fhir.get(f"/fhir/DocumentReference/{doc['id']}.2").status_code == 404
    assert fhir.get(f"/fhir/DocumentReference/{doc['id']}.3").status_code == 404


def test_a_deleted_document_is_entered_in_error(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    before = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()
    fhir.delete(f"/api/v1/documents/{doc['id']}", params={"reason": "wrong patient"})

    after = fhir.get(f"/fhir/DocumentReference/{doc['id']}")

    assert after.json()["status"] == "entered-in-error"
    # Any change, even through REST, gives a new version id: If-Match stays honest.
    assert after.json()["meta"]["versionId"] != before["meta"]["versionId"]
    binary = fhir.get(after.json()["content"][0]["attachment"]["url"])
    assert binary.status_code == 410
    assert binary.json()["issue"][0]["code"] == "deleted"


def test_versions_stored_before_sha1_omit_the_hash(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    with runtime.clinical.session() as session:
        session.execute(update(DocumentVersion).values(sha1=None))
        session.commit()

    resource = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()
    attachment = resource["content"][0]["attachment"]

    assert "hash" not in attachment
    assert attachment["extension"][0]["url"] == "urn:medvault:fhir:attachment-sha256"


def test_unknown_and_malformed_ids_are_not_found(fhir: TestClient) -> None:
    for raw in ("nope", "00000000-0000-0000-0000-000000000000", "x.1", "0" * 36):
        response = fhir.get(f"/fhir/DocumentReference/{raw}")
        assert response.status_code == 404, raw
        assert response.json()["issue"][0]["code"] == "not-found"


def test_vread_resolves_the_current_version_only(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    resource = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()
    version = resource["meta"]["versionId"]

    assert fhir.get(f"/fhir/DocumentReference/{doc['id']}/_history/{version}").json() == resource
    stale = fhir.get(f"/fhir/DocumentReference/{doc['id']}/_history/1")
    assert stale.status_code == 404


def test_format_negotiation(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    path = f"/fhir/DocumentReference/{doc['id']}"

    assert fhir.get(path, params={"_format": "json"}).status_code == 200
    plain = fhir.get(path, headers={"accept": "application/json"})
    assert plain.headers["content-type"].startswith("application/json")
    for refused in (
        fhir.get(path, params={"_format": "xml"}),
        fhir.get(path, headers={"accept": "application/fhir+xml"}),
    ):
        assert refused.status_code == 406
        assert refused.json()["resourceType"] == "OperationOutcome"
