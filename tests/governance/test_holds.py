"""Legal holds: placed, listed, released, audited; and no path destroys what one covers.

On SQLite + filesystem and PostgreSQL + S3.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.auth.principal import Role
from medvault.documents.models import DocumentVersion, ScanState, VersionState
from medvault.governance import appraisal
from medvault.governance.models import Appraisal, AppraisalState
from medvault.kit.problems import PROBLEM_TYPE_BASE
from medvault.runtime import Runtime
from tests.governance.support import blob_keys, listed_appraisal, upload_due_record
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs
from tests.support.users import UserFactory, bearer, login

LEGAL_HOLD = PROBLEM_TYPE_BASE + "legal-hold"


def _hold(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"reason": "Coroner's inquest", "reference": "INQ-2026-114", **fields}
    response = client.post("/api/v1/governance/holds", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/v1/governance/holds/{response.json()['id']}"
    return dict(response.json())


def _state(runtime: Runtime, appraisal_id: str) -> str:
    with runtime.clinical.session() as session:
        found = session.get(Appraisal, uuid.UUID(appraisal_id))
        assert found is not None
        return found.state


@pytest.mark.parametrize("scope", ["patient", "document", "query"])
def test_a_hold_of_any_scope_blocks_approval(
    client: TestClient, runtime: Runtime, scope: str
) -> None:
    record = upload_due_record(client, runtime)
    other = upload_due_record(client, runtime)
    fields = {
        "patient": {"patient_id": record.patient_id},
        "document": {"document_id": record.document_id},
        # Progress notes created today: both records match a query hold.
        "query": {"document_type": "11506-3", "created_from": "2020-01-01"},
    }[scope]
    hold = _hold(client, scope=scope, **fields)
    assert hold["active"] is True
    # The appraisal skips what a hold covers: a held record is not even listed.
    report = appraisal.run(runtime)
    assert report.held >= 1
    listed = client.get("/api/v1/governance/appraisals", params={"state": "due"}).json()["items"]
    listed_ids = {item["document_id"] for item in listed}
    assert record.document_id not in listed_ids
    assert (other.document_id in listed_ids) is (scope != "query")

    released = client.post(
        f"/api/v1/governance/holds/{hold['id']}/release", json={"reason": "Inquest closed"}
    )
    assert released.status_code == 200, released.text
    assert released.json()["active"] is False
    assert released.json()["release_reason"] == "Inquest closed"
    # Released: the next appraisal lists it.
    entry = listed_appraisal(client, runtime, record.document_id)
    assert entry["state"] == "due"


def test_a_hold_placed_after_listing_refuses_approval_and_is_audited(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime)
    entry = listed_appraisal(client, runtime, record.document_id)
    hold = _hold(client, scope="document", document_id=record.document_id)
    refused = client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/approve", json={"reason": "due"}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == LEGAL_HOLD
    assert refused.json()["hold_id"] == hold["id"]
    (attempt,) = audit_events(runtime, "retention.destruction.approve", outcome="failure")
    assert str(attempt.patient_id) == record.patient_id
    assert _state(runtime, entry["id"]) == AppraisalState.DUE


def test_a_hold_placed_after_approval_stops_the_destruction_job(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime)
    keys = blob_keys(runtime, record.version_ids)
    entry = listed_appraisal(client, runtime, record.document_id)
    approved = client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/approve", json={"reason": "due"}
    )
    assert approved.json()["state"] == "approved"
    # Between the approval and the job: an inquiry freezes the patient's record.
    _hold(client, scope="patient", patient_id=record.patient_id)
    run_due_jobs(runtime)
    assert _state(runtime, entry["id"]) == AppraisalState.HELD
    assert audit_events(runtime, "document.destroyed") == []
    (blocked,) = audit_events(runtime, "retention.destruction.blocked")
    assert str(blocked.resource_id) == record.document_id
    still = {blob.key for blob in runtime.blobs.list_blobs()}
    assert set(keys) <= still
    content = client.get(f"/api/v1/documents/{record.document_id}/content")
    assert content.status_code == 200 and content.content.startswith(b"%PDF")


def test_a_hold_blocks_an_admins_destruction_of_a_quarantined_version(
    client: TestClient, runtime: Runtime
) -> None:
    """The other path that destroys content: an infected version an admin destroys."""
    record = upload_due_record(client, runtime)
    with runtime.clinical.session() as session:
        version = session.get(DocumentVersion, record.version_ids[0])
        assert version is not None
        version.scan_state = ScanState.INFECTED
        session.commit()
    _hold(client, scope="document", document_id=record.document_id)
    refused = client.post(
        f"/api/v1/quarantine/{record.document_id}/versions/1/destroy",
        params={"reason": "EICAR"},
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == LEGAL_HOLD
    with runtime.clinical.session() as session:
        version = session.get(DocumentVersion, record.version_ids[0])
        assert version is not None and version.state == VersionState.AVAILABLE
    (attempt,) = audit_events(runtime, "document.version.destroyed", outcome="failure")
    assert str(attempt.patient_id) == record.patient_id


def test_holds_are_listed_filtered_read_and_every_step_audited(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime)
    by_patient = _hold(client, scope="patient", patient_id=record.patient_id)
    by_document = _hold(client, scope="document", document_id=record.document_id)
    by_query = _hold(client, scope="query", created_from="2001-01-01", created_to="2001-12-31")
    client.post(f"/api/v1/governance/holds/{by_query['id']}/release", json={"reason": "done"})

    active = client.get("/api/v1/governance/holds", params={"active": True}).json()["items"]
    assert {item["id"] for item in active} == {by_patient["id"], by_document["id"]}
    mine = client.get("/api/v1/governance/holds", params={"patient_id": record.patient_id})
    assert {item["id"] for item in mine.json()["items"]} == {by_patient["id"], by_document["id"]}
    released = client.get("/api/v1/governance/holds", params={"active": False}).json()["items"]
    assert [item["id"] for item in released] == [by_query["id"]]
    one = client.get(f"/api/v1/governance/holds/{by_document['id']}")
    assert one.status_code == 200 and one.json()["reference"] == "INQ-2026-114"

    placed = audit_events(runtime, "legal_hold.place")
    assert [str(event.resource_id) for event in placed] == [
        by_patient["id"],
        by_document["id"],
        by_query["id"],
    ]
    # The patient's own record shows the holds on it; the reason (sensitive) is not logged.
    assert [str(event.patient_id) for event in placed[:2]] == [record.patient_id] * 2
    assert all("Coroner" not in str(event.details) for event in placed)
    assert len(audit_events(runtime, "legal_hold.release")) == 1
    assert len(audit_events(runtime, "legal_hold.list")) == 3
    (read,) = audit_events(runtime, "legal_hold.read")
    assert str(read.patient_id) == record.patient_id
    # A second release is a conflict, and a hold never released twice.
    again = client.post(
        f"/api/v1/governance/holds/{by_query['id']}/release", json={"reason": "again"}
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"scope": "patient"},
        {"scope": "patient", "document_id": str(uuid.uuid4())},
        {"scope": "document", "patient_id": str(uuid.uuid4()), "document_id": str(uuid.uuid4())},
        {"scope": "query"},
        {"scope": "query", "patient_id": str(uuid.uuid4()), "document_type": "11506-3"},
        {"scope": "query", "created_from": "2020-02-01", "created_to": "2020-01-01"},
        {"scope": "query", "document_type": "not a code"},
        {"scope": "patient", "patient_id": str(uuid.uuid4()), "reason": " ", "reference": "x"},
        {"scope": "elsewhere", "patient_id": str(uuid.uuid4())},
    ],
)
def test_a_malformed_hold_is_a_422_and_places_nothing(
    client: TestClient, runtime: Runtime, body: dict[str, Any]
) -> None:
    response = client.post(
        "/api/v1/governance/holds", json={"reason": "r", "reference": "ref", **body}
    )
    assert response.status_code == 422, response.text
    assert response.json()["type"].startswith(PROBLEM_TYPE_BASE)
    assert audit_events(runtime, "legal_hold.place") == []


def test_a_hold_on_an_unknown_patient_or_document_is_a_404(client: TestClient) -> None:
    for field, scope in (("patient_id", "patient"), ("document_id", "document")):
        response = client.post(
            "/api/v1/governance/holds",
            json={"scope": scope, field: str(uuid.uuid4()), "reason": "r", "reference": "x"},
        )
        assert response.status_code == 404, response.text


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.AUDITOR, Role.PATIENT])
def test_only_records_governance_places_holds_and_the_refusal_is_audited(
    client: TestClient, runtime: Runtime, make_user: UserFactory, role: Role
) -> None:
    record = upload_due_record(client, runtime)
    user = make_user(role, patient_id=record.patient_id if role is Role.PATIENT else None)
    token = login(client, user.username, user.password).json()["access_token"]
    response = client.post(
        "/api/v1/governance/holds",
        json={"scope": "patient", "patient_id": record.patient_id, "reason": "r", "reference": "x"},
        headers=bearer(token),
    )
    assert response.status_code == 403, response.text
    denied = [
        event
        for event in audit_events(runtime, "access.denied")
        if event.actor_id == f"user:{user.id}"
    ]
    assert [str(event.patient_id) for event in denied] == [record.patient_id]
    with runtime.clinical.session() as session:
        assert session.scalars(select(Appraisal)).all() == []
