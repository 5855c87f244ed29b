"""The care-team API: administrators open and close a patient's records to clinicians."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.support.factories import create_patient
from tests.support.inspect import audit_rows
from tests.support.users import UserFactory, bearer, login


def test_care_teams_open_and_close_a_patient_to_a_clinician(
    client: TestClient, anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    patient, other_patient = create_patient(client), create_patient(client)
    clinician = make_user(Role.CLINICIAN)
    as_clinician = bearer(
        login(anon_client, clinician.username, clinician.password).json()["access_token"]
    )
    assert anon_client.get(f"/api/v1/patients/{patient}", headers=as_clinician).status_code == 404

    member = {"clinician_id": str(clinician.id), "patient_id": patient}
    added = client.post("/api/v1/care-teams", json=member)
    assert added.status_code == 201, added.text
    assert added.json()["clinician_username"] == clinician.username
    assert added.json()["added_by"].startswith("api_token:")
    assert client.post("/api/v1/care-teams", json=member).status_code == 200  # already there

    # The very same access token now reaches the patient, and only that one.
    assert anon_client.get(f"/api/v1/patients/{patient}", headers=as_clinician).status_code == 200
    assert (
        anon_client.get(f"/api/v1/patients/{other_patient}", headers=as_clinician).status_code
        == 404
    )
    listed = client.get("/api/v1/care-teams", params={"patient_id": patient}).json()["items"]
    assert [(m["clinician_id"], m["patient_id"]) for m in listed] == [(str(clinician.id), patient)]
    assert client.get("/api/v1/care-teams", params={"patient_id": other_patient}).json() == {
        "items": []
    }

    removed = client.delete(f"/api/v1/care-teams/{clinician.id}/{patient}")
    assert removed.status_code == 204
    assert anon_client.get(f"/api/v1/patients/{patient}", headers=as_clinician).status_code == 404
    assert client.delete(f"/api/v1/care-teams/{clinician.id}/{patient}").status_code == 404

    events = audit_rows(runtime, "careteam.add", "careteam.remove")
    assert [e.action for e in events] == ["careteam.add", "careteam.remove"]
    assert all(str(e.patient_id) == patient for e in events)


def test_care_team_members_must_be_real_enabled_clinicians(
    client: TestClient, make_user: UserFactory
) -> None:
    patient = create_patient(client)
    auditor, clinician = make_user(Role.AUDITOR), make_user(Role.CLINICIAN)

    def add(clinician_id: object, patient_id: object) -> Any:
        body = {"clinician_id": str(clinician_id), "patient_id": str(patient_id)}
        return client.post("/api/v1/care-teams", json=body)

    assert add(auditor.id, patient).json()["type"].endswith("unknown-clinician")
    assert add(uuid.uuid4(), patient).status_code == 422
    assert add(clinician.id, uuid.uuid4()).json()["type"].endswith("unknown-patient")
    client.post(f"/api/v1/users/{clinician.id}/disable")
    assert add(clinician.id, patient).json()["type"].endswith("unknown-clinician")
    assert client.get("/api/v1/care-teams").json() == {"items": []}
