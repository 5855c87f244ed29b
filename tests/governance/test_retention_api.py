"""Retention dates where people see them (REST, FHIR), recomputed when their inputs change;
appraisal decisions, the two-person rule, and the schedule in force.

On SQLite + filesystem and PostgreSQL + S3.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.auth.principal import Role
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir.mapping.codes import RETENTION_EXTENSION
from medvault.governance import appraisal
from medvault.governance.schedule import add_years
from medvault.kit.problems import PROBLEM_TYPE_BASE
from medvault.runtime import Runtime
from tests.fhir.support import fhir_client, validate_resource
from tests.governance.support import listed_appraisal, upload_due_record
from tests.support.factories import create_patient, upload_raw
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs
from tests.support.users import UserFactory, bearer, login


def _document(client: TestClient, document_id: str) -> dict[str, object]:
    response = client.get(f"/api/v1/documents/{document_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_new_document_gets_its_date_at_once_and_its_record_follows_each_change(
    client: TestClient, app: FastAPI, api_token: str, runtime: Runtime
) -> None:
    today = date.today()
    patient = create_patient(client, birth_date="1975-06-01")
    first = upload_raw(client, patient, b"%PDF-1.7\n" + b"a" * 64).json()
    # In the upload's own answer: the default class, 8 years after this (last) entry.
    assert first["retention_class"] == "health-record"
    assert first["retain_until"] == add_years(today, 8).isoformat()

    # A mental-health note (a class of its own) in the same record.
    second = upload_raw(client, patient, b"%PDF-1.7\n" + b"b" * 64, document_type="11510-5").json()
    assert second["retention_class"] == "mental-health"
    assert second["retain_until"] == add_years(today, 20).isoformat()

    # Treatment ended in 2015: the record's dates move back, for every document of it.
    response = client.patch(
        f"/api/v1/patients/{patient}", json={"treatment_ended_on": "2015-09-30"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["treatment_ended_on"] == "2015-09-30"
    assert _document(client, first["id"])["retain_until"] == "2023-09-30"
    assert _document(client, second["id"])["retain_until"] == "2035-09-30"

    # Death in 2016: mental health goes 10 years after death when that is sooner.
    client.patch(f"/api/v1/patients/{patient}", json={"deceased_on": "2016-01-10"})
    assert _document(client, second["id"])["retain_until"] == "2026-01-10"
    assert _document(client, first["id"])["retain_until"] == "2024-01-10"  # 8y after death

    # Clearing the date of death (entered in error) restores the earlier dates.
    client.patch(f"/api/v1/patients/{patient}", json={"deceased_on": None})
    assert _document(client, second["id"])["retain_until"] == "2035-09-30"
    (update, *_) = audit_events(runtime, "patient.update")
    assert update.details == {"fields": ["treatment_ended_on"], "documents_rescheduled": 2}

    # FHIR shows the same, as the documented extension.
    with fhir_client(app, api_token) as fhir:
        resource = fhir.get(f"/fhir/DocumentReference/{second['id']}").json()
    validate_resource(resource)
    (extension,) = [e for e in resource["extension"] if e["url"] == RETENTION_EXTENSION]
    parts = {part["url"]: part for part in extension["extension"]}
    assert parts["class"]["valueCode"] == "mental-health"
    assert parts["retainUntil"]["valueDate"] == "2035-09-30"


def test_a_new_entry_moves_the_whole_records_date_at_once(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client, birth_date="1975-06-01")
    first = upload_raw(client, patient, b"%PDF-1.7\n" + b"c" * 64).json()
    # Pretend the first entry was long ago: its date would be 8 years after that.
    with runtime.clinical.session() as session:
        version = session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == uuid.UUID(first["id"]))
        ).one()
        version.created_at = version.created_at - timedelta(days=3650)
        document = session.get(Document, version.document_id)
        assert document is not None
        document.retain_until = date(2020, 1, 1)
        session.commit()
    upload_raw(client, patient, b"%PDF-1.7\n" + b"d" * 64)  # moves it in its own transaction
    assert _document(client, first["id"])["retain_until"] == add_years(date.today(), 8).isoformat()


def test_dates_before_birth_or_in_the_future_are_refused_and_change_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client, birth_date="1990-01-01")
    for body in (
        {"deceased_on": "1989-12-31"},
        {"treatment_ended_on": (date.today() + timedelta(days=2)).isoformat()},
        {"unknown": "x"},
    ):
        response = client.patch(f"/api/v1/patients/{patient}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["type"].startswith(PROBLEM_TYPE_BASE)
    assert client.get(f"/api/v1/patients/{patient}").json()["deceased_on"] is None
    assert audit_events(runtime, "patient.update", outcome="success") == []


def test_keep_defers_the_record_until_a_later_appraisal(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime)
    entry = listed_appraisal(client, runtime, record.document_id)
    next_year = (date.today() + timedelta(days=365)).isoformat()
    kept = client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/keep",
        json={"reason": "Research value", "keep_until": next_year},
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["state"] == "kept" and kept.json()["keep_until"] == next_year
    # Not listed again while kept; approval of a kept appraisal is refused.
    assert appraisal.run(runtime).listed == 0
    refused = client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/approve", json={"reason": "x"}
    )
    assert refused.status_code == 409
    # Once keep_until has passed, the next appraisal lists it anew.
    assert appraisal.run(runtime, today=date.today() + timedelta(days=400)).listed == 1
    (event,) = audit_events(runtime, "retention.appraisal.kept")
    assert event.details["keep_until"] == next_year


def test_two_person_rule_needs_two_different_approvers(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"destruction_approvals": 2})
    record = upload_due_record(client, runtime)
    entry = listed_appraisal(client, runtime, record.document_id)
    assert entry["approvals_needed"] == 2
    first, second = make_user(Role.ADMIN), make_user(Role.ADMIN)
    url = f"/api/v1/governance/appraisals/{entry['id']}/approve"

    def approve(user_token: str) -> dict[str, object]:
        response = client.post(url, json={"reason": "due"}, headers=bearer(user_token))
        return {"status": response.status_code, **response.json()}

    token_1 = login(client, first.username, first.password).json()["access_token"]
    token_2 = login(client, second.username, second.password).json()["access_token"]
    once = approve(token_1)
    assert once["status"] == 200 and once["state"] == "approved-once"
    run_due_jobs(runtime)
    assert audit_events(runtime, "document.destroyed") == []  # one approval destroys nothing
    twice_by_one = approve(token_1)
    assert twice_by_one["status"] == 409
    final = approve(token_2)
    assert final["status"] == 200 and final["state"] == "approved"
    run_due_jobs(runtime)
    (certificate,) = audit_events(runtime, "document.destroyed")
    assert [item["actor"] for item in certificate.details["certificate"]["approved_by"]] == [
        f"user:{first.id}",
        f"user:{second.id}",
    ]


def test_the_schedule_in_force_is_served(client: TestClient) -> None:
    classes = client.get("/api/v1/governance/retention-classes")
    assert classes.status_code == 200, classes.text
    by_name = {item["name"]: item for item in classes.json()["items"]}
    assert set(by_name) >= {"adult", "child", "mental-health", "maternity", "gp-record"}
    assert by_name["health-record"]["default"] is True
    assert by_name["mental-health"]["document_types"] == ["11510-5"]
    assert by_name["gp-record"]["rules"] == [{"when": "deceased", "after": {"death": 10}}]


def test_a_number_is_not_a_date_in_any_body(client: TestClient, runtime: Runtime) -> None:
    """pydantic reads 0 as 1970-01-01 (a Unix time); the schema says an ISO date."""
    created = client.post(
        "/api/v1/patients",
        json={
            "identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000017"},
            "family_name": "Lovelace",
            "given_name": "Ada",
            "birth_date": 0,
        },
    )
    assert created.status_code == 422, created.text
    patient = create_patient(client, birth_date="1960-01-01")
    patched = client.patch(f"/api/v1/patients/{patient}", json={"deceased_on": 86400 * 365 * 40})
    assert patched.status_code == 422, patched.text
    hold = client.post(
        "/api/v1/governance/holds",
        json={"scope": "query", "created_from": 0, "reason": "r", "reference": "x"},
    )
    assert hold.status_code == 422, hold.text
    assert audit_events(runtime, "legal_hold.place") == []
