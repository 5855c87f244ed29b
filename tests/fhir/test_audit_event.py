"""The audit log as AuditEvent: auditors read all of it, patients their own record's."""

from __future__ import annotations

from fastapi.testclient import TestClient

from medvault.audit.sealer import seal_pending
from medvault.runtime import Runtime
from tests.fhir.support import People, entries, ids
from tests.support.factories import pdf_bytes, upload_raw
from tests.support.inspect import audit_events


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
