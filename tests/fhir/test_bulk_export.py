"""FHIR Bulk Data export: the asynchronous flow, filters, and who exports what.

Every test runs on SQLite + filesystem and on PostgreSQL + S3 (the ``backend`` fixture).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.auth.service import create_api_token, revoke_api_token
from medvault.fhir.bulk.models import BulkExport
from medvault.jobs import start_worker
from medvault.runtime import Runtime
from tests.fhir import bulk_client
from tests.fhir.bulk_support import PREFER, events, export, kick_off, manifest_of, run_exports
from tests.fhir.support import People, fhir_client
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.live_server import LiveServer
from tests.support.users import UserFactory, login


def _document_with_two_versions(client: TestClient, patient: str) -> str:
    document = str(upload_raw(client, patient, pdf_bytes(3000)).json()["id"])
    added = client.post(
        f"/api/v1/documents/{document}/versions",
        content=pdf_bytes(5000),
        headers={"content-type": "application/pdf"},
    )
    assert added.status_code == 201, added.text
    return document


def test_the_real_client_exports_over_http_and_every_attachment_verifies(
    app: FastAPI, runtime: Runtime, fhir: TestClient, api_token: str
) -> None:
    patients = [create_patient(fhir) for _ in range(3)]
    documents = [_document_with_two_versions(fhir, patients[0])]
    documents += [
        str(upload_raw(fhir, p, pdf_bytes(7000 + i)).json()["id"])
        for i, p in enumerate(patients[1:])
    ]
    deleted = str(upload_raw(fhir, patients[2], pdf_bytes(9999)).json()["id"])
    fhir.delete(f"/api/v1/documents/{deleted}", params={"reason": "test"})
    worker = start_worker(runtime)
    try:
        with LiveServer(app) as server, httpx.Client(timeout=60) as client:
            started = time.perf_counter()
            result = bulk_client.run(client, f"{server.url}/fhir", api_token)
            elapsed = time.perf_counter() - started
            # Exactly what a read returns, attachment URLs absolute on this server.
            for resource in result.resources["DocumentReference"]:
                read = client.get(
                    f"{server.url}/fhir/DocumentReference/{resource['id']}",
                    headers={"Authorization": f"Bearer {api_token}"},
                )
                assert read.json() == resource
    finally:
        worker.stop()
    assert result.status_url.startswith(f"{server.url}/fhir/$export-status/")
    assert {p["id"] for p in result.resources["Patient"]} == set(patients)
    # Four documents: one with two versions, the deleted one entered-in-error.
    references = result.resources["DocumentReference"]
    assert len(references) == 5
    statuses = sorted(r["status"] for r in references)
    assert statuses == ["current", "current", "current", "entered-in-error", "superseded"]
    assert all(
        r["content"][0]["attachment"]["url"].startswith(f"{server.url}/fhir/Binary/")
        for r in references
    )
    assert result.attachments_checked == 3
    assert result.errors == []
    assert result.manifest["request"] == f"{server.url}/fhir/Patient/$export"
    assert result.polls >= 1
    print(f"bulk export of 3 patients / 5 references: {elapsed:.2f} s, {result.polls} polls")


def test_type_and_since_select_what_is_exported(fhir: TestClient, runtime: Runtime) -> None:
    old_patient = create_patient(fhir)
    old_document = str(upload_raw(fhir, old_patient, pdf_bytes(1111)).json()["id"])
    time.sleep(0.01)
    since = datetime.now(UTC)
    time.sleep(0.01)
    new_patient = create_patient(fhir)
    new_document = str(upload_raw(fhir, new_patient, pdf_bytes(2222)).json()["id"])

    only_patients = export(fhir, runtime, _type="Patient")
    assert set(only_patients) == {"Patient"}
    assert {p["id"] for p in only_patients["Patient"]} == {old_patient, new_patient}

    only_documents = export(fhir, runtime, _type="DocumentReference")
    assert set(only_documents) == {"DocumentReference"}
    assert {d["id"] for d in only_documents["DocumentReference"]} == {old_document, new_document}

    instant = since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    recent = export(fhir, runtime, _since=instant)
    assert [p["id"] for p in recent["Patient"]] == [new_patient]
    assert [d["id"] for d in recent["DocumentReference"]] == [new_document]
    # A document changed after _since is exported again, though it was stored before.
    added = fhir.post(
        f"/api/v1/documents/{old_document}/versions",
        content=pdf_bytes(1212),
        headers={"content-type": "application/pdf"},
    )
    assert added.status_code == 201, added.text
    again = export(fhir, runtime, _since=instant, _type="DocumentReference")
    # Both of its versions: each DocumentReference shows the document's new lastUpdated.
    assert {d["id"] for d in again["DocumentReference"]} == {
        old_document,
        f"{old_document}.1",
        new_document,
    }

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    manifest = manifest_of(fhir, runtime, kick_off(fhir, _since=future))
    assert manifest["output"] == []  # nothing changed since then: an empty output list


def test_kick_off_refuses_what_it_cannot_honour(fhir: TestClient) -> None:
    path = "/fhir/Patient/$export"
    missing_prefer = fhir.get(path)
    assert missing_prefer.status_code == 400
    assert "respond-async" in missing_prefer.json()["issue"][0]["diagnostics"]
    cases = {
        "_type": "Patient,Observation",
        "_outputFormat": "text/csv",
        "_since": "2024-01-01",
        "_typeFilter": "DocumentReference?type=11502-2",
    }
    for name, value in cases.items():
        response = fhir.get(path, params={name: value}, headers=PREFER)
        assert response.status_code == 400, (name, response.text)
        issue = response.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "fhir-export-invalid"
        assert issue["expression"] == [name]
    observation = fhir.get(path, params={"_type": "Patient,Observation"}, headers=PREFER)
    assert "Observation" in observation.json()["issue"][0]["diagnostics"]
    for accepted in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        response = fhir.get(path, params={"_outputFormat": accepted}, headers=PREFER)
        assert response.status_code == 202, response.text


def test_a_clinician_exports_only_their_care_teams_patients(
    people: People, fhir: TestClient, runtime: Runtime
) -> None:
    mine = str(upload_raw(fhir, people.patient_a, pdf_bytes(3333)).json()["id"])
    upload_raw(fhir, people.patient_b, pdf_bytes(4444))
    found = export(people.clinician, runtime)
    assert [p["id"] for p in found["Patient"]] == [people.patient_a]
    assert [d["id"] for d in found["DocumentReference"]] == [mine]
    # Break-glass widens one request, never an export run later.
    reason = {"X-Break-Glass-Reason": "Unconscious patient in the emergency department"}
    started = kick_off_with(people.clinician, reason)
    assert started.status_code == 202, started.text
    glass = manifest_of(people.clinician, runtime, started.headers["Content-Location"])
    assert [item["count"] for item in glass["output"]] == [1, 1]  # still only patient A
    # ...and a system-level export is not theirs to start.
    refused = people.clinician.get("/fhir/$export", headers=PREFER)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"


def kick_off_with(client: TestClient, headers: dict[str, str]) -> httpx.Response:
    response: httpx.Response = client.get("/fhir/Patient/$export", headers={**PREFER, **headers})
    return response


def test_a_patient_token_exports_only_its_patient(
    app: FastAPI, people: People, fhir: TestClient, runtime: Runtime
) -> None:
    upload_raw(fhir, people.patient_a, pdf_bytes(5555))
    upload_raw(fhir, people.patient_b, pdf_bytes(6666))
    with runtime.auth.session() as session:
        token = create_api_token(
            session=session,
            name="patient app",
            scopes=("patient/*.read",),
            user_id=uuid.UUID(people.patient_user_id),
        ).token
        session.commit()
    with fhir_client(app, token) as client:
        found = export(client, runtime)
        assert client.get("/fhir/$export", headers=PREFER).status_code == 403
    assert [p["id"] for p in found["Patient"]] == [people.patient_a]
    assert {d["subject"]["reference"] for d in found["DocumentReference"]} == {
        f"Patient/{people.patient_a}"
    }
    # The patient user's own login reaches the same, and an auditor nothing at all.
    assert [p["id"] for p in export(people.patient, runtime)["Patient"]] == [people.patient_a]
    assert people.auditor.get("/fhir/Patient/$export", headers=PREFER).status_code == 403


def test_a_system_export_is_for_whoever_reaches_every_patient(
    fhir: TestClient, runtime: Runtime
) -> None:
    patients = {create_patient(fhir) for _ in range(2)}
    found = export(fhir, runtime, level="system")
    assert {p["id"] for p in found["Patient"]} == patients


def test_a_logged_out_session_exports_nothing_and_the_manifest_says_why(
    app: FastAPI, fhir: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    patient = create_patient(fhir)
    upload_raw(fhir, patient, pdf_bytes(7777))
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=patient)

    def session_token() -> str:
        response = login(fhir, clinician.username, clinician.password)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    with fhir_client(app, session_token()) as first:
        status_url = kick_off(first)
        assert first.post("/api/v1/auth/logout").status_code == 204
    run_exports(runtime)  # runs as the stored principal: its session is gone
    # The same clinician, logged in again: the same principal, so the export is theirs.
    with fhir_client(app, session_token()) as again:
        manifest = again.get(status_url).json()
        assert manifest["output"] == []
        assert [e["type"] for e in manifest["error"]] == ["OperationOutcome"]
        errors = again.get(manifest["error"][0]["url"])
    assert errors.status_code == 200
    assert "no longer valid" in errors.text
    assert len(events(runtime, "fhir.bulk_export.include")) == 0  # nothing was read


def test_a_revoked_token_exports_nothing(fhir: TestClient, runtime: Runtime, app: FastAPI) -> None:
    create_patient(fhir)
    with runtime.auth.session() as session:
        issued = create_api_token(session=session, name="short-lived", scopes=("user/*.read",))
        session.commit()
    with fhir_client(app, issued.token) as client:
        status_url = kick_off(client)
    with runtime.auth.session() as session:
        assert revoke_api_token(session=session, token_id=issued.id)
        session.commit()
    run_exports(runtime)
    assert fhir.get(status_url).status_code == 404  # someone else's export
    with runtime.clinical.read_session() as session:
        export_row = session.get(BulkExport, uuid.UUID(status_url.rsplit("/", 1)[1]))
        assert export_row is not None and export_row.state == "failed"
    assert events(runtime, "fhir.bulk_export.fail")
