"""The access policy through FHIR, and every kind of refusal as an OperationOutcome."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from medvault.auth.ratelimit import RateLimits
from medvault.runtime import Runtime
from tests.fhir.support import People, document_reference, entries, fhir_client, post_resource
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events, stored_state


def test_a_patient_sees_only_their_own_record(fhir: TestClient, people: People) -> None:
    mine = upload_raw(fhir, people.patient_a, pdf_bytes()).json()
    theirs = upload_raw(fhir, people.patient_b, pdf_bytes()).json()

    other = people.patient.get(
        "/fhir/DocumentReference", params={"patient": people.patient_b}
    ).json()
    assert other["type"] == "searchset" and other["total"] == 0 and "entry" not in other
    everything = people.patient.get("/fhir/DocumentReference").json()
    assert [r["id"] for r in entries(everything)] == [mine["id"]]

    read = people.patient.get(f"/fhir/DocumentReference/{theirs['id']}")
    missing = people.patient.get("/fhir/DocumentReference/00000000-0000-0000-0000-000000000000")
    # A refused record and an absent one are indistinguishable.
    assert read.status_code == missing.status_code == 404
    assert read.json()["issue"] == missing.json()["issue"]
    binary = fhir.get(f"/fhir/DocumentReference/{theirs['id']}").json()
    url = binary["content"][0]["attachment"]["url"]
    assert people.patient.get(url).status_code == 404
    assert people.patient.get(f"/fhir/Patient/{people.patient_b}").status_code == 404
    patients = people.patient.get("/fhir/Patient").json()
    assert [r["id"] for r in entries(patients)] == [people.patient_a]


def test_refusals_of_real_records_are_audited(
    fhir: TestClient, people: People, runtime: Runtime
) -> None:
    theirs = upload_raw(fhir, people.patient_b, pdf_bytes()).json()
    people.patient.get(f"/fhir/DocumentReference/{theirs['id']}")
    denied = audit_events(runtime, "access.denied")[-1]
    assert denied.resource_id == theirs["id"]
    assert str(denied.patient_id) == people.patient_b
    assert denied.details["path"] == f"/fhir/DocumentReference/{theirs['id']}"


def test_a_clinician_reaches_the_care_team_and_breaks_glass(
    fhir: TestClient, people: People, runtime: Runtime
) -> None:
    theirs = upload_raw(fhir, people.patient_b, pdf_bytes()).json()
    path = f"/fhir/DocumentReference/{theirs['id']}"
    assert people.clinician.get(path).status_code == 404
    emergency = people.clinician.get(
        path, headers={"X-Break-Glass-Reason": "Unconscious in the emergency department"}
    )
    assert emergency.status_code == 200
    event = audit_events(runtime, "document.read")[-1]
    assert event.break_glass_reason == "Unconscious in the emergency department"


def test_an_admin_reads_metadata_but_content_only_by_breaking_glass(
    fhir: TestClient, people: People
) -> None:
    doc = upload_raw(fhir, people.patient_a, pdf_bytes()).json()
    resource = people.admin.get(f"/fhir/DocumentReference/{doc['id']}")
    assert resource.status_code == 200
    url = resource.json()["content"][0]["attachment"]["url"]
    refused = people.admin.get(url)
    assert refused.status_code == 403
    issue = refused.json()["issue"][0]
    assert issue["code"] == "forbidden"
    assert "needs_break_glass: True" in issue["diagnostics"]
    granted = people.admin.get(
        url, headers={"X-Break-Glass-Reason": "Subject access request #4711"}
    )
    assert granted.status_code == 200


def test_an_auditor_reads_no_clinical_content(people: People) -> None:
    for path in ("/fhir/DocumentReference", "/fhir/Patient"):
        refused = people.auditor.get(path)
        assert refused.status_code == 403
        assert refused.json()["issue"][0]["code"] == "forbidden"


def test_authentication_errors_are_operation_outcomes(fhir_anon: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer mvt_not-a-real-token"}):
        response = fhir_anon.get("/fhir/DocumentReference", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="medvault"'
        assert response.json()["issue"][0]["code"] == "login"
    # The CapabilityStatement is public, as clients read it before they log in.
    assert fhir_anon.get("/fhir/metadata").status_code == 200


def test_unknown_routes_and_methods_are_operation_outcomes(fhir: TestClient) -> None:
    missing = fhir.get("/fhir/Observation")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"
    wrong = fhir.patch("/fhir/DocumentReference/x", json={})
    assert wrong.status_code == 405
    assert wrong.json()["issue"][0]["code"] == "not-supported"
    unsupported = fhir.post(
        "/fhir/DocumentReference", content=b"<xml/>", headers={"content-type": "application/xml"}
    )
    assert unsupported.status_code == 415


def test_rate_limits_are_operation_outcomes(
    app: FastAPI, fhir: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(fhir)
    app.state.rate_limits = RateLimits.from_settings(
        runtime.settings.model_copy(update={"upload_rate_limit": "1/minute"}),
        key_prefix="fhir-test",
    )
    first = post_resource(fhir, "/fhir/DocumentReference", document_reference(patient, pdf_bytes()))
    assert first.status_code == 201
    before = stored_state(runtime)
    limited = post_resource(
        fhir, "/fhir/DocumentReference", document_reference(patient, pdf_bytes())
    )
    assert limited.status_code == 429
    assert limited.json()["issue"][0]["code"] == "throttled"
    assert "retry-after" in limited.headers
    assert stored_state(runtime) == before


def test_no_audit_no_access(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    url = fhir.get(f"/fhir/DocumentReference/{doc['id']}").json()["content"][0]["attachment"]["url"]
    before = stored_state(runtime)
    with runtime.clinical.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_offline"))
    try:
        for response in (
            fhir.get(f"/fhir/DocumentReference/{doc['id']}"),
            fhir.get("/fhir/DocumentReference"),
            fhir.get(url),
            fhir.get(url, headers={"accept": "application/fhir+json"}),
            fhir.get(f"/fhir/Patient/{patient}"),
            post_resource(
                fhir, "/fhir/DocumentReference", document_reference(patient, pdf_bytes())
            ),
        ):
            assert response.status_code == 503, response.request.url
            assert response.json()["issue"][0]["code"] == "transient"
            assert b"%PDF" not in response.content
        assert stored_state(runtime) == before
    finally:
        with runtime.clinical.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events_offline RENAME TO audit_events"))
    assert fhir.get(url).status_code == 200


def test_a_patient_may_not_self_upload_when_it_is_off(
    people: People, runtime: Runtime, app: FastAPI
) -> None:
    runtime.settings.patient_self_upload = False
    try:
        refused = post_resource(
            people.patient,
            "/fhir/DocumentReference",
            document_reference(people.patient_a, pdf_bytes()),
        )
        assert refused.status_code == 403
    finally:
        runtime.settings.patient_self_upload = True


def test_a_scoped_client_sees_only_what_it_may(app: FastAPI, fhir: TestClient) -> None:
    patient = create_patient(fhir)
    upload_raw(fhir, patient, pdf_bytes())
    with fhir_client(app) as anonymous:
        assert anonymous.get(f"/fhir/Patient/{patient}").status_code == 401


def test_no_answer_tells_an_unreadable_binary_from_a_missing_one(
    fhir: TestClient, people: People
) -> None:
    theirs = upload_raw(fhir, people.patient_b, pdf_bytes()).json()
    url = fhir.get(f"/fhir/DocumentReference/{theirs['id']}").json()["content"][0]["attachment"][
        "url"
    ]
    missing = "/fhir/Binary/00000000-0000-0000-0000-000000000000"
    for params, headers in (
        ({}, {}),
        ({"_format": "xml"}, {}),
        ({}, {"accept": "application/fhir+json"}),
        ({}, {"Range": "bytes=0-9"}),
    ):
        refused = people.patient.get(url, params=params, headers=headers)
        absent = people.patient.get(missing, params=params, headers=headers)
        assert refused.status_code == absent.status_code == 404
        assert refused.json()["issue"] == absent.json()["issue"]
