"""Patients and the audit log: their own access history, and nobody else's (issue 9).

The attack: a patient app's token (``patient/*.read``, which grants AuditEvent reading)
asked ``GET /api/v1/audit/events?patient_id=<other>`` and ``GET
/fhir/AuditEvent?patient=<other>`` and read every patient's events, with addresses,
user agents, usernames and reasons; an unbound ``patient/`` token did the same. Now the
REST audit API serves whole-log readers only, FHIR AuditEvent is scoped to the
patient's own record, and a patient reads their history in a projection that names
staff by role only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.auth.service import create_api_token
from medvault.runtime import Runtime
from tests.fhir.support import entries, fhir_client
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.inspect import audit_events
from tests.support.users import MadeUser, UserFactory, bearer, login

STAFF_AGENT = "ClinicianWorkstation/7.3 (ward 4)"
REASON = "Unconscious in A&E; allergy list needed now"


@dataclass
class Record:
    own: str
    other: str
    own_doc: str
    other_doc: str
    clinician: MadeUser
    patient_user: MadeUser
    tokens: dict[str, str]  # "bound", "audit-only", "unbound"


def issue(runtime: Runtime, *scopes: str, user_id: uuid.UUID | None = None) -> str:
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="app", scopes=scopes, user_id=user_id)
        session.commit()
    return token.token


@pytest.fixture
def record(
    app: FastAPI, client: TestClient, runtime: Runtime, make_user: UserFactory
) -> Iterator[Record]:
    """Two patients with a document each; a clinician opened both, one in an emergency."""
    own, other = create_patient(client), create_patient(client)
    own_doc = upload_raw(client, own, pdf_bytes()).json()["id"]
    other_doc = upload_raw(client, other, pdf_bytes()).json()["id"]
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=own)
    staff = login(client, clinician.username, clinician.password).json()["access_token"]
    with TestClient(app, raise_server_exceptions=False) as browser:
        headers = {**bearer(staff), "User-Agent": STAFF_AGENT}
        opened = browser.get(f"/api/v1/documents/{own_doc}/content", headers=headers)
        assert opened.status_code == 200
        # The other patient is not on this clinician's care team: break-glass, with a
        # reason that names the first patient (reasons never reach a patient).
        glass = {**headers, "X-Break-Glass-Reason": f"{REASON} (see {own})"}
        assert (
            browser.get(f"/api/v1/documents/{other_doc}/content", headers=glass).status_code == 200
        )
        assert browser.get(f"/api/v1/documents/{own_doc}", headers=glass).status_code == 200
    patient_user = make_user(Role.PATIENT, patient_id=own)
    yield Record(
        own=own,
        other=other,
        own_doc=own_doc,
        other_doc=other_doc,
        clinician=clinician,
        patient_user=patient_user,
        tokens={
            "bound": issue(runtime, "patient/*.read", user_id=patient_user.id),
            "audit-only": issue(runtime, "patient/AuditEvent.read", user_id=patient_user.id),
            "unbound": issue(runtime, "patient/*.read"),
        },
    )


def body_text(response: Any) -> str:
    """The answer without what echoes the caller's own request: a Bundle's links, a
    problem's ``instance`` (the path asked for)."""
    body = response.json()
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in ("link", "instance")}
    return json.dumps(body)


def other_patients_traces(record: Record) -> list[str]:
    return [record.other, record.other_doc]


@pytest.mark.parametrize("kind", ["bound", "audit-only", "unbound"])
def test_a_patient_token_reads_nothing_about_another_patient(
    app: FastAPI, client: TestClient, record: Record, kind: str
) -> None:
    other_event = entries(
        client.get("/fhir/AuditEvent", params={"patient": record.other, "_count": "1"}).json()
    )[0]["id"]
    with fhir_client(app, record.tokens[kind]) as app_client:
        rest = app_client.get("/api/v1/audit/events", params={"patient_id": record.other})
        assert rest.status_code == 403
        assert rest.headers["content-type"] == "application/problem+json"
        for proof in ("/api/v1/audit/checkpoint", "/api/v1/audit/proof/consistency?first=1"):
            assert app_client.get(proof).status_code == 403

        searched = app_client.get("/fhir/AuditEvent", params={"patient": record.other})
        assert searched.status_code == 200
        assert entries(searched.json()) == [] and searched.json()["total"] == 0
        posted = app_client.post("/fhir/AuditEvent/_search", data={"patient": record.other})
        assert posted.status_code == 200 and entries(posted.json()) == []
        everything = app_client.get("/fhir/AuditEvent", params={"_count": "200"})
        assert everything.status_code == 200
        assert app_client.get(f"/fhir/AuditEvent/{other_event}").status_code == 404
        history = app_client.get(f"/api/v1/patients/{record.other}/access-history")
        assert history.status_code == 404

        for response in (rest, searched, posted, everything, history):
            text = body_text(response)
            assert not [trace for trace in other_patients_traces(record) if trace in text]
        own_events = entries(everything.json())
        if kind == "unbound":
            # No patient in context: reaches nobody, its own "record" included.
            assert own_events == []
            assert (
                app_client.get(f"/api/v1/patients/{record.own}/access-history").status_code == 404
            )
        else:
            assert own_events, "a bound token reads the events about its own record"
            subjects = {
                entity["what"]["reference"]
                for event in own_events
                for entity in event.get("entity", [])
                if entity["what"]["reference"].startswith("Patient/")
            }
            assert subjects == {f"Patient/{record.own}"}


def test_a_patient_sees_who_opened_their_record_by_role_only(
    app: FastAPI, runtime: Runtime, record: Record
) -> None:
    user = record.patient_user
    session_token = login_token(app, user)
    for token in (record.tokens["bound"], record.tokens["audit-only"], session_token):
        with TestClient(app, raise_server_exceptions=False) as patient:
            response = patient.get(
                f"/api/v1/patients/{record.own}/access-history",
                params={"limit": 200},
                headers=bearer(token),
            )
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        opened = [item for item in items if item["action"] == "document.content.read"]
        assert opened and opened[0]["who"] == "a clinician"
        assert opened[0]["what"] == "opened a document"
        assert opened[0]["document_id"] == record.own_doc
        # The document's title only for a caller that may read the patient's documents.
        assert bool(opened[0]["document_title"]) is (token != record.tokens["audit-only"])
        assert opened[0]["outcome"] == "success" and opened[0]["emergency"] is False
        emergency = [item for item in items if item["emergency"]]
        assert [item["action"] for item in emergency] == ["document.read"]
        assert {item["who"] for item in emergency} == {"a clinician"}
        assert all(item["who"] != "you" for item in items if item["actor_role"] == "clinician")
        # Nothing about the staff member beyond their role, nothing about another patient.
        text = response.text
        for secret in (
            record.clinician.username,
            str(record.clinician.id),
            STAFF_AGENT,
            REASON,
            "testclient",  # the TestClient's client address
            record.other,
            record.other_doc,
        ):
            assert secret not in text, secret
        assert set(items[0]) == {
            "id",
            "occurred_at",
            "who",
            "is_you",
            "actor_role",
            "action",
            "what",
            "document_id",
            "document_title",
            "outcome",
            "emergency",
        }
    # Their own reads of the history are in it (the latest was the session's, before
    # this one), as "you", and audited.
    with TestClient(app, raise_server_exceptions=False) as patient:
        url = f"/api/v1/patients/{record.own}/access-history"
        assert patient.get(url, headers=bearer(record.tokens["bound"])).status_code == 200
        again = patient.get(url, headers=bearer(session_token)).json()["items"]
    assert again[0]["action"] == "audit.read" and again[0]["who"] == "you, through an app"
    assert again[1]["who"] == "you" and again[1]["what"] == (
        "viewed the access history of your record"
    )
    assert again[0]["is_you"] is True
    reads = audit_events(runtime, "audit.read")
    assert reads[-1].details["view"] == "access-history"
    assert reads[-1].patient_id == uuid.UUID(record.own)


def login_token(app: FastAPI, user: MadeUser) -> str:
    with TestClient(app, raise_server_exceptions=False) as anonymous:
        response = login(anonymous, user.username, user.password)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_fhir_gives_a_patient_the_projection_without_other_peoples_details(
    app: FastAPI, client: TestClient, record: Record
) -> None:
    with fhir_client(app, record.tokens["bound"]) as patient:
        bundle = patient.get("/fhir/AuditEvent", params={"_count": "200"}).json()
        events = entries(bundle)
        single = patient.get(f"/fhir/AuditEvent/{events[0]['id']}")
    assert single.status_code == 200 and single.json() == events[0]
    text = body_text_of(bundle)
    for secret in (record.clinician.username, STAFF_AGENT, REASON, "testclient", record.other):
        assert secret not in text, secret
    for event in events:
        for agent in event["agent"]:
            assert set(agent["who"]) == {"display"}
            assert "network" not in agent and "extension" not in agent
        assert "extension" not in event  # request id, leaf index
        assert all("detail" not in entity for entity in event.get("entity", []))
    emergency = [event for event in events if "purposeOfEvent" in event]
    assert emergency and all(
        "text" not in purpose for event in emergency for purpose in event["purposeOfEvent"]
    )
    assert emergency[0]["agent"][0]["who"]["display"] == "a clinician"
    # An auditor still reads the same event in full.
    full = client.get(f"/fhir/AuditEvent/{emergency[0]['id']}").json()
    assert full["agent"][0]["who"]["identifier"]["value"].startswith("user:")
    assert REASON in json.dumps(full)


def body_text_of(bundle: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in bundle.items() if key != "link"})


def test_staff_and_other_scopes_stay_out(
    app: FastAPI, runtime: Runtime, record: Record, make_user: UserFactory
) -> None:
    clinician = login_token(app, record.clinician)
    admin = login_token(app, make_user(Role.ADMIN))
    no_audit_scope = issue(
        runtime, "patient/DocumentReference.read", user_id=record.patient_user.id
    )
    with TestClient(app, raise_server_exceptions=False) as anyone:
        for token in (clinician, admin, no_audit_scope):
            for url in (
                f"/api/v1/patients/{record.own}/access-history",
                "/api/v1/audit/events",
                "/fhir/AuditEvent",
            ):
                assert anyone.get(url, headers=bearer(token)).status_code == 403, url


def test_a_foreign_history_request_is_audited_against_that_patient(
    app: FastAPI, runtime: Runtime, record: Record
) -> None:
    with TestClient(app, raise_server_exceptions=False) as patient:
        response = patient.get(
            f"/api/v1/patients/{record.other}/access-history",
            headers=bearer(record.tokens["bound"]),
        )
    assert response.status_code == 404
    denied = audit_events(runtime, "access.denied")
    assert denied[-1].patient_id == uuid.UUID(record.other)
