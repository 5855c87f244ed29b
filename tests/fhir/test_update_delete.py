"""Metadata updates with If-Match, and delete as entered-in-error."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.fhir.support import fhir_client, post_resource
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events, stored_state


def put(client: TestClient, resource: dict[str, Any], **headers: str) -> Any:
    return client.put(f"/fhir/DocumentReference/{resource['id']}", json=resource, headers=headers)


@pytest.fixture
def document(fhir: TestClient) -> dict[str, Any]:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes(), classification="restricted").json()
    resource = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()
    assert isinstance(resource, dict)
    return resource


def test_an_update_changes_metadata_and_the_version(
    fhir: TestClient, runtime: Runtime, document: dict[str, Any]
) -> None:
    edited = dict(document)
    edited["description"] = "Corrected description"
    edited["type"] = {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]}
    edited["content"] = [
        {"attachment": {**document["content"][0]["attachment"], "title": "New title"}}
    ]
    etag = f'W/"{document["meta"]["versionId"]}"'

    response = put(fhir, edited, **{"If-Match": etag})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["meta"]["versionId"] != document["meta"]["versionId"]
    assert response.headers["etag"] == f'W/"{updated["meta"]["versionId"]}"'
    assert updated["description"] == "Corrected description"
    assert updated["type"]["coding"][0]["code"] == "11506-3"
    assert updated["category"][0]["coding"][0]["code"] == "clinical-note"
    assert updated["content"][0]["attachment"]["title"] == "New title"
    # No securityLabel sent in a later update never downgrades the confidentiality.
    assert updated["securityLabel"][0]["coding"][0]["code"] == "R"
    rest = fhir.get(f"/api/v1/documents/{document['id']}").json()
    assert rest["title"] == "New title" and rest["document_type"] == "11506-3"
    event = audit_events(runtime, "document.update")[-1]
    assert event.details == {"fields": ["document_type", "description", "title"]}

    # The old ETag is stale now: a second editor cannot overwrite the first.
    stale = put(fhir, edited, **{"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    assert stale.headers["etag"] == response.headers["etag"]


def test_a_dropped_label_keeps_the_classification(
    fhir: TestClient, document: dict[str, Any]
) -> None:
    edited = {key: value for key, value in document.items() if key != "securityLabel"}
    response = put(fhir, edited, **{"If-Match": f'W/"{document["meta"]["versionId"]}"'})
    assert response.json()["securityLabel"][0]["coding"][0]["code"] == "R"


def test_an_update_needs_if_match(fhir: TestClient, document: dict[str, Any]) -> None:
    response = put(fhir, document)
    assert response.status_code == 428
    assert response.json()["issue"][0]["code"] == "required"


@pytest.mark.parametrize(
    "change",
    ["subject", "status", "content url", "content data", "id", "identifier", "size"],
)
def test_what_an_update_cannot_change(
    fhir: TestClient, runtime: Runtime, document: dict[str, Any], change: str
) -> None:
    edited = dict(document)
    attachment = dict(document["content"][0]["attachment"])
    match change:
        case "subject":
            edited["subject"] = {"reference": f"Patient/{create_patient(fhir)}"}
        case "status":
            edited["status"] = "superseded"
        case "content url":
            attachment["url"] = "Binary/00000000-0000-0000-0000-000000000001"
        case "content data":
            attachment.pop("url")
            attachment["data"] = "JVBERi0="
        case "id":
            edited["id"] = "00000000-0000-0000-0000-000000000001"
        case "identifier":
            edited["identifier"] = [{"system": "urn:x", "value": "1"}]
        case "size":
            attachment["size"] = attachment["size"] + 1
    edited["content"] = [{"attachment": attachment}]
    updates = len(audit_events(runtime, "document.update", outcome="success"))
    response = fhir.put(
        f"/fhir/DocumentReference/{document['id']}",
        json=edited,
        headers={"If-Match": f'W/"{document["meta"]["versionId"]}"'},
    )
    assert response.status_code in (400, 422), response.text
    assert fhir.get(f"/fhir/DocumentReference/{document['id']}").json() == document
    assert len(audit_events(runtime, "document.update", outcome="success")) == updates
    # The refused attempt is in the audit log too, as what it tried to do.
    refused = audit_events(runtime, "document.update", outcome="failure")[-1]
    assert refused.resource_id == document["id"] and refused.details["status"] in (400, 422)


def test_delete_marks_entered_in_error(
    fhir: TestClient, runtime: Runtime, document: dict[str, Any]
) -> None:
    before = stored_state(runtime)
    response = fhir.delete(
        f"/fhir/DocumentReference/{document['id']}", params={"reason": "filed to wrong patient"}
    )
    assert response.status_code == 200
    assert response.json()["issue"][0]["severity"] == "information"
    after = fhir.get(f"/fhir/DocumentReference/{document['id']}").json()
    assert after["status"] == "entered-in-error"
    assert stored_state(runtime) == before  # nothing is physically removed
    event = audit_events(runtime, "document.delete")[-1]
    assert event.details == {"reason": "filed to wrong patient"}
    # Idempotent, as FHIR deletes are; the REST API shows the same soft delete.
    assert fhir.delete(f"/fhir/DocumentReference/{document['id']}").status_code == 200
    assert len(audit_events(runtime, "document.delete")) == 1
    assert fhir.get(f"/api/v1/documents/{document['id']}").json()["status"] == "deleted"
    # An entered-in-error document is not edited any more.
    blocked = put(fhir, after, **{"If-Match": f'W/"{after["meta"]["versionId"]}"'})
    assert blocked.status_code == 409


def test_delete_honours_if_match(fhir: TestClient, document: dict[str, Any]) -> None:
    stale = fhir.delete(f"/fhir/DocumentReference/{document['id']}", headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert fhir.get(f"/fhir/DocumentReference/{document['id']}").json()["status"] == "current"


def test_superseded_versions_are_read_only(fhir: TestClient, document: dict[str, Any]) -> None:
    fhir.post(
        f"/api/v1/documents/{document['id']}/versions",
        content=pdf_bytes(),
        headers={"content-type": "application/pdf"},
    )
    old = fhir.get(f"/fhir/DocumentReference/{document['id']}.1").json()
    assert put(fhir, old, **{"If-Match": f'W/"{old["meta"]["versionId"]}"'}).status_code == 422
    assert fhir.delete(f"/fhir/DocumentReference/{document['id']}.1").status_code == 422


def test_patients_edit_only_their_own_uploads(
    fhir: TestClient, people: Any, runtime: Runtime
) -> None:
    own = post_resource(
        people.patient,
        "/fhir/DocumentReference",
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]},
            "subject": {"reference": f"Patient/{people.patient_a}"},
            "content": [{"attachment": {"data": "JVBERi0xLjcKJXN5bnRoZXRpYwo="}}],
        },
    )
    assert own.status_code == 201, own.text
    resource = own.json()
    resource["description"] = "My own note"
    edited = put(people.patient, resource, **{"If-Match": f'W/"{resource["meta"]["versionId"]}"'})
    assert edited.status_code == 200, edited.text
    clinicians = upload_raw(fhir, people.patient_a, pdf_bytes()).json()
    theirs = people.patient.get(f"/fhir/DocumentReference/{clinicians['id']}").json()
    refused = put(people.patient, theirs, **{"If-Match": f'W/"{theirs["meta"]["versionId"]}"'})
    assert refused.status_code == 403
    assert audit_events(runtime, "access.denied")[-1].resource_id == clinicians["id"]


def test_concurrent_updates_with_one_etag_let_exactly_one_through(
    app: FastAPI, api_token: str, document: dict[str, Any], runtime: Runtime
) -> None:
    etag = f'W/"{document["meta"]["versionId"]}"'
    start = threading.Barrier(6)

    def edit(index: int) -> int:
        with fhir_client(app, api_token) as client:
            edited = {**document, "description": f"Editor {index}"}
            start.wait()
            return int(put(client, edited, **{"If-Match": etag}).status_code)

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(edit, range(6)))

    assert statuses == [200] + [412] * 5
    assert len(audit_events(runtime, "document.update", outcome="success")) == 1
    assert len(audit_events(runtime, "document.update", outcome="failure")) == 5
