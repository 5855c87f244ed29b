"""Patient read/search, and the audit log as AuditEvent for auditors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medvault.audit.sealer import seal_pending
from medvault.runtime import Runtime
from tests.fhir.conftest import People
from tests.fhir.support import entries, link
from tests.support.factories import NHS_SYSTEM, create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events


def ids(bundle: dict[str, object]) -> list[str]:
    return [str(resource["id"]) for resource in entries(bundle)]


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


def test_auditors_read_the_log_as_audit_events(
    fhir: TestClient, people: People, runtime: Runtime
) -> None:
    doc = upload_raw(fhir, people.patient_a, pdf_bytes()).json()
    people.clinician.get(
        f"/fhir/DocumentReference/{doc['id']}",
        headers={"X-Break-Glass-Reason": "Cardiac arrest on the ward"},
    )
    upload_raw(fhir, people.patient_b, pdf_bytes())
    people.patient.get(f"/fhir/Patient/{people.patient_b}")  # refused: access.denied
    seal_pending(runtime=runtime)

    bundle = people.auditor.get(
        "/fhir/AuditEvent", params={"patient": people.patient_a, "_count": 100}
    ).json()
    events = entries(bundle)
    assert events and all(
        any(
            e.get("what", {}).get("reference") == f"Patient/{people.patient_a}"
            for e in ev["entity"]
        )
        for ev in events
    )
    read = next(ev for ev in events if ev["subtype"][0]["code"] == "document.read")
    assert read["action"] == "R"
    assert read["outcome"] == "0"
    assert read["subtype"][1] == {
        "system": "http://hl7.org/fhir/restful-interaction",
        "code": "read",
    }
    assert read["entity"][0]["what"] == {"reference": f"DocumentReference/{doc['id']}"}
    assert read["agent"][0]["who"]["identifier"]["value"].startswith("user:")
    assert read["agent"][0]["requestor"] is True
    assert read["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert "Cardiac arrest on the ward" in read["purposeOfEvent"][0]["text"]
    leaf = [x for x in read["extension"] if x["url"] == "urn:medvault:fhir:audit-leaf-index"]
    assert leaf and leaf[0]["valueString"].isdigit()

    denied = people.auditor.get(
        "/fhir/AuditEvent", params={"subtype": "access.denied", "outcome": "4"}
    ).json()
    assert [ev["outcome"] for ev in entries(denied)] == ["4"]
    assert entries(denied)[0]["outcomeDesc"] == "access denied"


def test_audit_event_filters(fhir: TestClient, people: People, runtime: Runtime) -> None:
    doc = upload_raw(fhir, people.patient_a, pdf_bytes()).json()
    people.clinician.get(f"/fhir/DocumentReference/{doc['id']}")
    clinician_actor = f"user:{people.clinician_id}"

    by_agent = people.auditor.get("/fhir/AuditEvent", params={"agent": clinician_actor}).json()
    assert by_agent["total"] >= 1
    assert {ev["agent"][0]["who"]["identifier"]["value"] for ev in entries(by_agent)} == {
        clinician_actor
    }
    as_identifier = people.auditor.get(
        "/fhir/AuditEvent", params={"agent:identifier": f"urn:medvault:actor|{clinician_actor}"}
    ).json()
    assert ids(as_identifier) == ids(by_agent)
    by_entity = people.auditor.get(
        "/fhir/AuditEvent", params={"entity": f"DocumentReference/{doc['id']}"}
    ).json()
    assert {ev["subtype"][0]["code"] for ev in entries(by_entity)} >= {
        "document.create",
        "document.read",
    }
    by_date = people.auditor.get("/fhir/AuditEvent", params={"date": "lt2000"}).json()
    assert by_date["total"] == 0
    one = entries(by_entity)[0]
    direct = people.auditor.get(f"/fhir/AuditEvent/{one['id']}")
    assert direct.status_code == 200 and direct.json() == one
    assert people.auditor.get("/fhir/AuditEvent/999999999").status_code == 404
    # Reading the audit log is itself audited.
    assert audit_events(runtime, "audit.read")[-1].details["view"] == "fhir-audit-event"


def test_only_auditors_read_the_whole_audit_log(people: People) -> None:
    for client in (people.clinician, people.admin):
        assert client.get("/fhir/AuditEvent").status_code == 403
    # A patient reads the events about their own record only (tests/audit/test_access_history.py).
    own = people.patient.get("/fhir/AuditEvent", params={"_count": "200"})
    assert own.status_code == 200
    subjects = {
        entity["what"]["reference"]
        for resource in entries(own.json())
        for entity in resource.get("entity", [])
        if entity["what"]["reference"].startswith("Patient/")
    }
    assert subjects == {f"Patient/{people.patient_a}"}
