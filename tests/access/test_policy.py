"""The access policy over HTTP, per role, on both backends.

Callers of each role are injected as principals here; tests/auth covers how real
users log in to become those principals.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.deps import get_principal
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.inspect import audit_events

World = dict[str, str]


@pytest.fixture
def world(client: TestClient, runtime: Runtime) -> World:
    """Patients A and B with one document each; clinician C looks after A only."""
    patient_a, patient_b = create_patient(client), create_patient(client)
    doc_a = upload_raw(client, patient_a, pdf_bytes()).json()["id"]
    doc_b = upload_raw(client, patient_b, pdf_bytes()).json()["id"]
    clinician = uuid.uuid4()
    put_on_care_team(runtime, clinician_id=clinician, patient_id=patient_a)
    return {
        "patient_a": patient_a,
        "patient_b": patient_b,
        "doc_a": doc_a,
        "doc_b": doc_b,
        "clinician": str(clinician),
    }


def principal(role: Role, world: World, *, break_glass_reason: str | None = None) -> Principal:
    return Principal(
        kind=PrincipalKind.USER,
        subject_id=uuid.UUID(world["clinician"]) if role is Role.CLINICIAN else uuid.uuid4(),
        name=f"test-{role.value}",
        role=role,
        patient_id=uuid.UUID(world["patient_a"]) if role is Role.PATIENT else None,
        break_glass_reason=break_glass_reason,
    )


@pytest.fixture
def as_caller(app: FastAPI) -> Iterator[Callable[[Principal], TestClient]]:
    clients: list[TestClient] = []

    def make(who: Principal) -> TestClient:
        app.dependency_overrides[get_principal] = lambda: who
        test_client = TestClient(app, raise_server_exceptions=False)
        clients.append(test_client)
        return test_client

    yield make
    app.dependency_overrides.clear()


def listed(client: TestClient) -> set[str]:
    return {item["id"] for item in client.get("/api/v1/documents").json()["items"]}


def test_clinician_reaches_only_their_care_team(
    world: World, as_caller: Callable[[Principal], TestClient]
) -> None:
    c = as_caller(principal(Role.CLINICIAN, world))
    assert listed(c) == {world["doc_a"]}
    assert c.get(f"/api/v1/documents/{world['doc_a']}/content").status_code == 200
    for path in (
        f"/api/v1/documents/{world['doc_b']}",
        f"/api/v1/documents/{world['doc_b']}/content",
        f"/api/v1/documents/{world['doc_b']}/versions",
        f"/api/v1/patients/{world['patient_b']}",
    ):
        response = c.get(path)
        assert response.status_code == 404, path
        assert response.json()["type"] == "urn:medvault:problem:not-found"
    refused = upload_raw(c, world["patient_b"], pdf_bytes())
    assert refused.status_code == 422
    assert refused.json()["type"] == "urn:medvault:problem:unknown-patient"
    assert upload_raw(c, world["patient_a"], pdf_bytes()).status_code == 201
    assert (
        c.delete(f"/api/v1/documents/{world['doc_b']}", params={"reason": "x"}).status_code == 404
    )


def test_a_foreign_document_looks_exactly_like_a_missing_one(
    world: World, as_caller: Callable[[Principal], TestClient]
) -> None:
    c = as_caller(principal(Role.CLINICIAN, world))
    foreign = c.get(f"/api/v1/documents/{world['doc_b']}")
    missing = c.get(f"/api/v1/documents/{uuid.uuid4()}")
    assert foreign.status_code == missing.status_code == 404
    strip = {"instance"}
    assert {k: v for k, v in foreign.json().items() if k not in strip} == {
        k: v for k, v in missing.json().items() if k not in strip
    }


def test_break_glass_opens_any_record_and_is_flagged(
    world: World, runtime: Runtime, as_caller: Callable[[Principal], TestClient]
) -> None:
    reason = "Unconscious patient in A&E, care team unreachable"
    c = as_caller(principal(Role.CLINICIAN, world, break_glass_reason=reason))
    assert listed(c) == {world["doc_a"], world["doc_b"]}
    assert c.get(f"/api/v1/documents/{world['doc_b']}/content").status_code == 200
    (event,) = [
        e for e in audit_events(runtime, "document.content.read") if e.resource_id == world["doc_b"]
    ]
    assert event.break_glass_reason == reason
    assert event.actor_role == "clinician"


def test_patient_sees_only_their_own_record(
    world: World, as_caller: Callable[[Principal], TestClient]
) -> None:
    p = as_caller(principal(Role.PATIENT, world))
    assert listed(p) == {world["doc_a"]}
    assert p.get(f"/api/v1/documents/{world['doc_a']}/content").status_code == 200
    assert p.get(f"/api/v1/documents/{world['doc_b']}/content").status_code == 404
    assert p.get(f"/api/v1/patients/{world['patient_b']}").status_code == 404
    assert [x["id"] for x in p.get("/api/v1/patients").json()["items"]] == [world["patient_a"]]
    assert upload_raw(p, world["patient_a"], pdf_bytes()).status_code == 201
    assert upload_raw(p, world["patient_b"], pdf_bytes()).status_code == 422
    assert p.post("/api/v1/patients", json={}).status_code in (403, 422)


def test_patient_self_upload_can_be_turned_off(
    world: World, runtime: Runtime, as_caller: Callable[[Principal], TestClient]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"patient_self_upload": False})
    p = as_caller(principal(Role.PATIENT, world))
    refused = upload_raw(p, world["patient_a"], pdf_bytes())
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:medvault:problem:forbidden"


def test_admin_sees_metadata_but_content_needs_break_glass(
    world: World, as_caller: Callable[[Principal], TestClient]
) -> None:
    admin = as_caller(principal(Role.ADMIN, world))
    assert listed(admin) == {world["doc_a"], world["doc_b"]}
    assert admin.get(f"/api/v1/documents/{world['doc_b']}").status_code == 200
    refused = admin.get(f"/api/v1/documents/{world['doc_b']}/content")
    assert refused.status_code == 403
    assert refused.json()["needs_break_glass"] is True
    assert admin.post(f"/api/v1/documents/{world['doc_b']}/download-url").status_code == 403
    assert upload_raw(admin, world["patient_a"], pdf_bytes()).status_code == 403
    glass = as_caller(principal(Role.ADMIN, world, break_glass_reason="Subject access request"))
    assert glass.get(f"/api/v1/documents/{world['doc_b']}/content").status_code == 200


def test_auditor_reads_nothing_clinical(
    world: World, as_caller: Callable[[Principal], TestClient]
) -> None:
    auditor = as_caller(principal(Role.AUDITOR, world))
    for path in (
        "/api/v1/documents",
        f"/api/v1/documents/{world['doc_a']}",
        f"/api/v1/documents/{world['doc_a']}/content",
        "/api/v1/patients",
        f"/api/v1/patients/{world['patient_a']}",
    ):
        assert auditor.get(path).status_code == 403, path
    assert upload_raw(auditor, world["patient_a"], pdf_bytes()).status_code == 403


def test_refusals_and_lookups_of_missing_records_are_audited(
    world: World, runtime: Runtime, as_caller: Callable[[Principal], TestClient]
) -> None:
    # Issue 9: a missing id is audited like a refused real one (no patient named), so
    # that both 404s do the same work and their timing cannot tell them apart.
    c = as_caller(principal(Role.CLINICIAN, world))
    assert c.get(f"/api/v1/documents/{world['doc_b']}").status_code == 404
    assert c.get(f"/api/v1/documents/{uuid.uuid4()}").status_code == 404
    assert c.get(f"/api/v1/patients/{world['patient_b']}").status_code == 404
    auditor = as_caller(principal(Role.AUDITOR, world))
    assert auditor.get("/api/v1/documents").status_code == 403
    events = audit_events(runtime, "access.denied")
    assert [
        (e.actor_role, e.resource_type, str(e.patient_id) if e.patient_id else None, e.outcome)
        for e in events
    ] == [
        ("clinician", "Document", world["patient_b"], "denied"),
        ("clinician", "Document", None, "denied"),
        ("clinician", "Patient", world["patient_b"], "denied"),
        ("auditor", None, None, "denied"),
    ]
    assert events[3].details["permission"] == "documents:read"
    assert events[0].request_id
