"""Patient registry API."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.support.factories import NHS_SYSTEM, patient_payload, pdf_bytes, upload_raw
from tests.support.inspect import audit_events
from tests.support.users import UserFactory, bearer, login


def test_create_read_and_find_by_identifier(client: TestClient, runtime: Runtime) -> None:
    payload = patient_payload(identifier={"system": NHS_SYSTEM, "value": "9434765919"})
    created = client.post("/api/v1/patients", json=payload)
    assert created.status_code == 201
    patient_id = created.json()["id"]
    assert created.headers["location"] == f"/api/v1/patients/{patient_id}"

    read = client.get(f"/api/v1/patients/{patient_id}").json()
    assert read["identifier"] == payload["identifier"]
    assert read["birth_date"] == payload["birth_date"]
    assert read["family_name"] == payload["family_name"]

    found = client.get("/api/v1/patients", params={"identifier": f"{NHS_SYSTEM}|9434765919"})
    assert [p["id"] for p in found.json()["items"]] == [patient_id]
    none = client.get("/api/v1/patients", params={"identifier": f"{NHS_SYSTEM}|0000000000"})
    assert none.json()["items"] == []
    assert [e.action for e in audit_events(runtime, "patient.create")] == ["patient.create"]


def test_same_identifier_twice_is_409(client: TestClient) -> None:
    payload = patient_payload()
    first = client.post("/api/v1/patients", json=payload)
    again = client.post("/api/v1/patients", json=patient_payload(identifier=payload["identifier"]))
    assert again.status_code == 409
    assert again.json()["type"] == "urn:medvault:problem:duplicate-patient"
    assert again.json()["existing_patient_id"] == first.json()["id"]


def test_same_value_in_another_system_is_a_different_patient(client: TestClient) -> None:
    a = client.post(
        "/api/v1/patients", json=patient_payload(identifier={"system": NHS_SYSTEM, "value": "123"})
    )
    b = client.post(
        "/api/v1/patients",
        json=patient_payload(identifier={"system": "https://hospital.example/mrn", "value": "123"}),
    )
    assert a.status_code == b.status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        {"birth_date": "2999-01-01"},
        {"birth_date": "1700-01-01"},
        {"birth_date": "01/02/1980"},
        {"family_name": "   "},
        {"given_name": "x" * 201},
        {"identifier": {"system": "not a uri", "value": "1"}},
        {"identifier": {"system": NHS_SYSTEM, "value": ""}},
        {"identifier": {"system": NHS_SYSTEM, "value": "a|b"}},
        {"unexpected": "field"},
    ],
)
def test_invalid_patients_are_422_and_not_stored(
    client: TestClient, change: dict[str, object]
) -> None:
    response = client.post("/api/v1/patients", json=patient_payload(**change))
    assert response.status_code == 422
    assert response.json()["type"] == "urn:medvault:problem:validation-error"
    assert response.json()["errors"]
    assert client.get("/api/v1/patients").json()["items"] == []


def test_validation_errors_do_not_echo_patient_data(client: TestClient) -> None:
    response = client.post(
        "/api/v1/patients", json=patient_payload(family_name="", given_name="Zyxwvut")
    )
    assert response.status_code == 422
    assert "Zyxwvut" not in response.text


def test_bad_identifier_query_is_400(client: TestClient) -> None:
    response = client.get("/api/v1/patients", params={"identifier": "no-separator"})
    assert response.status_code == 400
    assert response.json()["type"] == "urn:medvault:problem:bad-request"


def test_patient_list_pages(client: TestClient) -> None:
    ids = [client.post("/api/v1/patients", json=patient_payload()).json()["id"] for _ in range(5)]
    page = client.get("/api/v1/patients", params={"limit": 3}).json()
    rest = client.get("/api/v1/patients", params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [p["id"] for p in page["items"] + rest["items"]] == list(reversed(ids))
    assert rest["next_cursor"] is None


def test_name_search_matches_word_prefixes_and_birth_date(
    client: TestClient, runtime: Runtime
) -> None:
    def make(family: str, given: str, born: str) -> str:
        body = patient_payload(family_name=family, given_name=given, birth_date=born)
        return str(client.post("/api/v1/patients", json=body).json()["id"])

    ann = make("Smithson", "Ann", "1961-05-04")
    annabel = make("Jones", "Annabel", "1990-01-01")
    john = make("Smith", "John", "1961-05-04")
    percent = make("O_Neil", "Pat", "1970-01-01")

    def found(**params: str) -> set[str]:
        return {p["id"] for p in client.get("/api/v1/patients", params=params).json()["items"]}

    assert found(name="ann") == {ann, annabel}
    assert found(name="ANN SMI") == {ann}
    assert found(name="smith") == {ann, john}
    assert found(name="mith") == set()  # prefixes of a name, not any substring
    assert found(name="o_") == {percent}
    assert found(name="_") == set()  # _ is literal, not a wildcard
    assert found(name="smith", birth_date="1961-05-04") == {ann, john}
    assert found(birth_date="1990-01-01") == {annabel}
    # The names searched for never reach the audit log.
    searches = audit_events(runtime, "patient.search")
    assert searches and all("ann" not in str(e.details).lower() for e in searches)


def test_a_clinician_who_registers_a_patient_joins_their_care_team(
    app: FastAPI, client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    clinician = make_user(Role.CLINICIAN)
    with TestClient(app) as as_clinician:
        token = login(as_clinician, clinician.username, clinician.password).json()
        as_clinician.headers.update(bearer(token["access_token"]))
        body = patient_payload()
        created = as_clinician.post("/api/v1/patients", json=body)
        assert created.status_code == 201
        patient_id = created.json()["id"]
        # On their care team at once: they can read it and file a document.
        assert as_clinician.get(f"/api/v1/patients/{patient_id}").status_code == 200
        listed = {p["id"] for p in as_clinician.get("/api/v1/patients").json()["items"]}
        assert listed == {patient_id}
        assert upload_raw(as_clinician, patient_id, pdf_bytes()).status_code == 201

        # A patient registered by someone else stays out of reach, and a clash with
        # their identifier does not reveal that record's id.
        other = client.post("/api/v1/patients", json=patient_payload()).json()
        clash = as_clinician.post(
            "/api/v1/patients", json={**body, "identifier": other["identifier"]}
        )
        assert clash.status_code == 409 and "existing_patient_id" not in clash.json()
        assert as_clinician.get(f"/api/v1/patients/{other['id']}").status_code == 404
    joined = audit_events(runtime, "careteam.add")
    assert [e.details["reason"] for e in joined] == ["registered the patient"]
