"""Patient read and search: the registry as FHIR, within the caller's reach."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.fhir.support import People, ids, link
from tests.support.factories import NHS_SYSTEM, create_patient
from tests.support.inspect import audit_events


@pytest.fixture
def registry(fhir: TestClient) -> dict[str, str]:
    return {
        "ann": create_patient(
            fhir,
            identifier={"system": NHS_SYSTEM, "value": "9000000001"},
            family_name="Smith",
            given_name="Ann",
            birth_date="1970-02-14",
        ),
        "anna": create_patient(
            fhir,
            identifier={"system": NHS_SYSTEM, "value": "9000000002"},
            family_name="Jones",
            given_name="Anna",
            birth_date="1985-07-01",
        ),
        "bob": create_patient(
            fhir,
            identifier={"system": "urn:oid:1.2.3", "value": "9000000001"},
            family_name="Smithers",
            given_name="Bob",
            birth_date="2001-12-31",
        ),
    }


def test_a_patient_maps_onto_fhir(fhir: TestClient, registry: dict[str, str]) -> None:
    response = fhir.get(f"/fhir/Patient/{registry['ann']}")
    assert response.status_code == 200
    patient = response.json()
    assert patient["identifier"] == [
        {"use": "official", "system": NHS_SYSTEM, "value": "9000000001"}
    ]
    assert patient["name"] == [{"use": "official", "family": "Smith", "given": ["Ann"]}]
    assert patient["birthDate"] == "1970-02-14"
    assert response.headers["etag"] == 'W/"1"'


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"identifier": f"{NHS_SYSTEM}|9000000001"}, ["ann"]),
        ({"identifier": "9000000001"}, ["bob", "ann"]),
        ({"identifier": "urn:oid:1.2.3|"}, ["bob"]),
        ({"identifier": "|9000000001"}, []),
        ({"name": "smi"}, ["bob", "ann"]),
        ({"name": "ann smi"}, ["ann"]),
        ({"name": "ann"}, ["anna", "ann"]),
        ({"family": "smith"}, ["bob", "ann"]),
        ({"given": "anna"}, ["anna"]),
        ({"name": "50%_"}, []),
        ({"birthdate": "1985"}, ["anna"]),
        ({"birthdate": "ge1985-07-01"}, ["bob", "anna"]),
        ({"birthdate": "lt1985-07-01"}, ["ann"]),
        ({"birthdate": "1970-02-14"}, ["ann"]),
    ],
)
def test_patient_search(
    fhir: TestClient, registry: dict[str, str], params: dict[str, str], expected: list[str]
) -> None:
    found = fhir.get("/fhir/Patient", params=params).json()
    assert ids(found) == [registry[name] for name in expected]
    assert found["total"] == len(expected)


def test_patient_search_pages_and_is_audited_without_names(
    fhir: TestClient, runtime: Runtime, registry: dict[str, str]
) -> None:
    first = fhir.get("/fhir/Patient", params={"name": "s", "_count": 1}).json()
    second = fhir.get(link(first, "next") or "").json()
    assert ids(first) + ids(second) == [registry["bob"], registry["ann"]]
    assert link(second, "next") is None
    event = audit_events(runtime, "patient.search")[-1]
    assert event.details == {"results": 1}
    assert "Smith" not in str(event.details)


def test_birthdate_takes_dates_only(fhir: TestClient) -> None:
    response = fhir.get("/fhir/Patient", params={"birthdate": "1985-07-01T10:00:00Z"})
    assert response.status_code == 400


def test_a_clinician_searches_only_the_care_team(fhir: TestClient, people: People) -> None:
    found = people.clinician.get("/fhir/Patient").json()
    assert ids(found) == [people.patient_a]
