"""Creating documents through FHIR: inline base64, Binary first, and new versions.

Every refusal is checked behind the API too: no row and no blob may be left.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.fhir.support import b64, document_reference, entries, post_resource, sha1_b64
from tests.support.factories import create_patient, pdf_bytes, png_bytes, upload_raw
from tests.support.inspect import audit_actions, stored_state


def test_create_with_inline_data_streams_into_the_vault(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes(20_000)
    resource = document_reference(
        patient,
        content,
        code="18842-5",
        description="Discharge after appendectomy",
        securityLabel=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                        "code": "V",
                    }
                ]
            }
        ],
    )
    resource["content"][0]["attachment"].update(
        title="Discharge summary", size=len(content), hash=sha1_b64(content)
    )

    response = post_resource(fhir, "/fhir/DocumentReference", resource)

    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"].endswith(
        f"/fhir/DocumentReference/{created['id']}/_history/{created['meta']['versionId']}"
    )
    assert response.headers["etag"] == f'W/"{created["meta"]["versionId"]}"'
    assert created["type"]["coding"][0]["code"] == "18842-5"
    assert created["description"] == "Discharge after appendectomy"
    assert created["securityLabel"][0]["coding"][0]["code"] == "V"
    assert created["content"][0]["attachment"]["title"] == "Discharge summary"
    assert created["content"][0]["attachment"]["hash"] == sha1_b64(content)
    # The same document on the REST API, with the same bytes.
    rest = fhir.get(f"/api/v1/documents/{created['id']}").json()
    assert rest["classification"] == "very-restricted" and rest["title"] == "Discharge summary"
    assert fhir.get(f"/api/v1/documents/{created['id']}/content").content == content
    assert "document.create" in audit_actions(runtime)


def test_data_may_come_before_the_metadata(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes()
    # Hand-written JSON with content first and the subject last: key order is free.
    body = (
        '{"content":[{"attachment":{"data":"' + b64(content) + '","title":"Late title"}}],'
        '"resourceType":"DocumentReference","status":"current",'
        '"type":{"coding":[{"system":"http://loinc.org","code":"11502-2"}]},'
        '"subject":{"reference":"Patient/' + patient + '"}}'
    )
    response = fhir.post(
        "/fhir/DocumentReference",
        content=body.encode(),
        headers={"content-type": "application/fhir+json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["content"][0]["attachment"]["title"] == "Late title"


def test_a_binary_first_then_its_document_reference(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes()
    stored = fhir.post(
        "/fhir/Binary",
        content=content,
        headers={"content-type": "application/pdf", "X-Security-Context": f"Patient/{patient}"},
    )
    assert stored.status_code == 201, stored.text
    binary = stored.json()
    assert binary["resourceType"] == "Binary" and "data" not in binary
    assert stored.headers["location"].endswith(f"/fhir/Binary/{binary['id']}/_history/1")
    draft_id = binary["securityContext"]["reference"].split("/")[1]
    # Until it is described, the document is a preliminary one of a generic type.
    draft = fhir.get(f"/fhir/DocumentReference/{draft_id}").json()
    assert draft["docStatus"] == "preliminary"
    assert draft["type"]["coding"][0]["code"] == "55188-7"

    described = post_resource(
        fhir,
        "/fhir/DocumentReference",
        document_reference(
            patient, url=f"Binary/{binary['id']}", code="11488-4", description="Consult"
        ),
    )

    assert described.status_code == 201, described.text
    resource = described.json()
    assert resource["id"] == draft_id
    assert resource["docStatus"] == "final"
    assert resource["type"]["coding"][0]["code"] == "11488-4"
    assert resource["content"][0]["attachment"]["url"].endswith(f"/Binary/{binary['id']}")
    assert fhir.get(f"/fhir/Binary/{binary['id']}").content == content
    # A described Binary cannot be claimed twice.
    again = post_resource(
        fhir, "/fhir/DocumentReference", document_reference(patient, url=f"Binary/{binary['id']}")
    )
    assert again.status_code == 409
    assert stored_state(runtime).documents == 1
    assert "document.update" in audit_actions(runtime)


def test_a_binary_as_a_fhir_resource(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    content = png_bytes()
    resource = {
        "resourceType": "Binary",
        "contentType": "image/png",
        "securityContext": {"reference": f"Patient/{patient}"},
        "data": b64(content),
    }
    stored = post_resource(fhir, "/fhir/Binary", resource)
    assert stored.status_code == 201, stored.text
    assert stored.json()["contentType"] == "image/png"
    raw = fhir.get(f"/fhir/Binary/{stored.json()['id']}")
    assert raw.content == content and raw.headers["content-type"] == "image/png"


def test_a_binary_in_a_documents_context_is_its_next_version(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    second = pdf_bytes()
    stored = fhir.post(
        "/fhir/Binary",
        content=second,
        headers={
            "content-type": "application/pdf",
            "X-Security-Context": f"DocumentReference/{doc['id']}",
        },
    )
    assert stored.status_code == 201, stored.text
    current = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()
    assert current["content"][0]["attachment"]["url"].endswith(stored.json()["id"])
    assert current["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{doc['id']}.1"
    assert current["docStatus"] == "final"  # a new version of a described document


@pytest.mark.parametrize(
    ("case", "status", "slug"),
    [
        ("type mismatch", 422, "fhir-unprocessable"),
        ("size mismatch", 422, "fhir-unprocessable"),
        ("hash mismatch", 422, "fhir-unprocessable"),
        ("bad base64", 400, "fhir-invalid-base64"),
        ("padding inside", 400, "fhir-invalid-base64"),
        ("not a document", 415, "unsupported-media-type"),
        ("unknown patient", 422, "unknown-patient"),
        ("no LOINC", 422, "fhir-unprocessable"),
        ("two attachments", 400, "fhir-invalid-json"),
        ("identifier", 422, "fhir-not-supported"),
        ("not FHIR", 400, "fhir-invalid-resource"),
        ("broken JSON", 400, "fhir-invalid-json"),
        ("duplicate key", 400, "fhir-invalid-json"),
        ("status", 422, "fhir-unprocessable"),
        ("both data and url", 422, "fhir-unprocessable"),
    ],
)
def test_a_refused_create_leaves_nothing(
    fhir: TestClient, runtime: Runtime, case: str, status: int, slug: str
) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes(3000)
    resource = document_reference(patient, content)
    attachment = resource["content"][0]["attachment"]
    raw: str | None = None
    match case:
        case "type mismatch":
            attachment["contentType"] = "image/png"
        case "size mismatch":
            attachment["size"] = len(content) + 1
        case "hash mismatch":
            attachment["hash"] = sha1_b64(b"something else")
        case "bad base64":
            attachment["data"] = attachment["data"][:-8] + "!!!!****"
        case "padding inside":
            attachment["data"] = "AA==" + attachment["data"]
        case "not a document":
            attachment["data"] = b64(b"just some text, no magic bytes at all" * 20)
            attachment.pop("contentType")
        case "unknown patient":
            resource["subject"] = {"reference": "Patient/00000000-0000-0000-0000-000000000001"}
        case "no LOINC":
            resource["type"] = {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}
        case "two attachments":
            resource["content"].append({"attachment": dict(attachment)})
        case "identifier":
            resource["identifier"] = [{"system": "urn:x", "value": "1"}]
        case "not FHIR":
            resource["content"][0]["attachment"]["colour"] = "blue"
        case "broken JSON":
            raw = json.dumps(resource)[:-20]
        case "duplicate key":
            raw = json.dumps(resource)[:-1] + ', "status": "current"}'
        case "status":
            resource["status"] = "superseded"
        case "both data and url":
            attachment["url"] = "Binary/00000000-0000-0000-0000-000000000001"
    before = stored_state(runtime)
    body = raw.encode() if raw is not None else json.dumps(resource).encode()

    response = fhir.post(
        "/fhir/DocumentReference", content=body, headers={"content-type": "application/fhir+json"}
    )

    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == slug
    assert stored_state(runtime) == before
    # Problems never echo submitted values back.
    assert attachment["data"][:40] not in response.text


def test_a_duplicate_is_refused_with_the_existing_id(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes()
    first = post_resource(fhir, "/fhir/DocumentReference", document_reference(patient, content))
    before = stored_state(runtime)
    again = post_resource(fhir, "/fhir/DocumentReference", document_reference(patient, content))
    assert again.status_code == 409
    issue = again.json()["issue"][0]
    assert issue["code"] == "duplicate"
    assert f"existing_document_id: {first.json()['id']}" in issue["diagnostics"]
    assert stored_state(runtime) == before


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 422),  # no security context
        ({"X-Security-Context": "Practitioner/1"}, 422),
        ({"X-Security-Context": "Patient/00000000-0000-0000-0000-000000000001"}, 422),
    ],
)
def test_a_refused_binary_leaves_nothing(
    fhir: TestClient, runtime: Runtime, headers: dict[str, str], status: int
) -> None:
    before = stored_state(runtime)
    response = fhir.post(
        "/fhir/Binary", content=pdf_bytes(), headers={"content-type": "application/pdf", **headers}
    )
    assert response.status_code == status, response.text
    assert stored_state(runtime) == before


def test_a_binary_whose_bytes_contradict_its_type_leaves_nothing(
    fhir: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(fhir)
    before = stored_state(runtime)
    response = fhir.post(
        "/fhir/Binary",
        content=pdf_bytes(),
        headers={"content-type": "image/jpeg", "X-Security-Context": f"Patient/{patient}"},
    )
    assert response.status_code == 422
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "application/pdf" in diagnostics and "image/jpeg" not in diagnostics
    assert stored_state(runtime) == before


def test_prefer_return_minimal_and_outcome(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    minimal = post_resource(
        fhir,
        "/fhir/DocumentReference",
        document_reference(patient, pdf_bytes()),
        Prefer="return=minimal",
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert "location" in minimal.headers
    outcome = post_resource(
        fhir,
        "/fhir/DocumentReference",
        document_reference(patient, pdf_bytes()),
        Prefer="return=OperationOutcome",
    )
    assert outcome.json()["resourceType"] == "OperationOutcome"
    found = fhir.get("/fhir/DocumentReference", params={"patient": patient}).json()
    assert len(entries(found)) == 2
