"""The quarantine API (an admin releases or destroys what clamd flagged), and the outbox:
a scan job exists exactly when its version committed.

Runs on both backends with the real clamd of this module (``clamd`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.documents.models import ScanState, VersionState
from medvault.documents.reading import ContentDestroyed
from medvault.kit.problems import PROBLEM_TYPE_BASE, Conflict
from medvault.processing import kinds, queue
from medvault.runtime import Runtime
from tests.documents.test_content_routes import World
from tests.fhir.support import fhir_client, post_resource
from tests.fhir.test_transaction import _broken, binary_entry, bundle, reference_entry
from tests.processing.scanning_world import (
    BODY_REPORTED_NAME,
    EICAR_PDF,
    assert_every_route_refuses,
    assert_every_route_serves,
    content_world,
    drain,
    job_count,
    scan_job,
    scanning_backend,
    version_row,
)
from tests.support.backends import Backend
from tests.support.clamd import ClamdServer
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.inspect import audit_events, stored_state
from tests.support.users import UserFactory, bearer, login

QUARANTINE = "/api/v1/quarantine"
REASON = {"reason": "Reviewed: a test pattern"}
# Route -> the audit action of the decision.
DECISIONS = {"release": "document.version.released", "destroy": "document.version.destroyed"}


@pytest.fixture
def backend(backend: Backend, clamd: ClamdServer) -> Backend:
    """Each backend of tests/conftest.py, scanning (blocking) with this module's clamd."""
    return scanning_backend(backend, clamd, "blocking")


@pytest.fixture
def infected(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> Iterator[World]:
    """An EICAR upload the worker has scanned: infected, in quarantine."""
    with content_world(app, runtime, client, make_user, EICAR_PDF) as world:
        drain(runtime)
        assert version_row(runtime, world.document_id).scan_state == ScanState.INFECTED
        yield world


def _headers(client: TestClient, make_user: UserFactory, role: Role, **kw: Any) -> dict[str, str]:
    user = make_user(role, **kw)
    response = login(client, user.username, user.password)
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


def _decide(
    client: TestClient, world: World, decision: str, headers: dict[str, str], number: int = 1
) -> httpx.Response:
    path = f"{QUARANTINE}/{world.document_id}/versions/{number}/{decision}"
    response: httpx.Response = client.post(path, params=REASON, headers=headers)
    return response


def test_only_an_admin_lists_releases_or_destroys(
    infected: World, runtime: Runtime, anon_client: TestClient, make_user: UserFactory
) -> None:
    patient_id = infected.api.get(f"/api/v1/documents/{infected.document_id}").json()["patient_id"]
    admin = _headers(anon_client, make_user, Role.ADMIN)
    clinician_user = make_user(Role.CLINICIAN)
    # On the care team, so a refusal is the quarantine permission, not the record's reach.
    put_on_care_team(runtime, clinician_id=clinician_user.id, patient_id=patient_id)
    clinician = bearer(
        login(anon_client, clinician_user.username, clinician_user.password).json()["access_token"]
    )
    patient = _headers(anon_client, make_user, Role.PATIENT, patient_id=patient_id)

    listed = anon_client.get(QUARANTINE, headers=admin)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["document_id"], item["patient_id"], item["version"]) == (
        infected.document_id,
        patient_id,
        1,
    )
    assert (item["scan_state"], item["scan_signature"], item["state"]) == (
        "infected",
        BODY_REPORTED_NAME,
        "available",
    )
    (seen,) = audit_events(runtime, "document.quarantine.list")
    assert (seen.resource_id, str(seen.patient_id)) == (infected.document_id, patient_id)

    for headers in (clinician, patient):
        assert anon_client.get(QUARANTINE, headers=headers).status_code == 403
        for decision in DECISIONS:
            assert _decide(anon_client, infected, decision, headers).status_code == 403
    version = version_row(runtime, infected.document_id)
    assert (version.scan_state, version.state) == (ScanState.INFECTED, VersionState.AVAILABLE)
    assert runtime.blobs.exists(version.storage_key)
    for action in DECISIONS.values():
        assert audit_events(runtime, action, outcome="success") == [], action


def test_a_released_version_is_served_again_and_stays_released_on_rescan(
    infected: World, runtime: Runtime, anon_client: TestClient, make_user: UserFactory
) -> None:
    admin_user = make_user(Role.ADMIN)
    admin = bearer(
        login(anon_client, admin_user.username, admin_user.password).json()["access_token"]
    )

    released = _decide(anon_client, infected, "release", admin)
    assert released.status_code == 200, released.text
    assert released.json()["scan_state"] == "released"
    (event,) = audit_events(runtime, "document.version.released", outcome="success")
    assert (event.resource_id, event.actor_id) == (infected.document_id, f"user:{admin_user.id}")
    assert event.details["reason"] == REASON["reason"]
    assert event.details["signature"] == BODY_REPORTED_NAME
    assert anon_client.get(QUARANTINE, headers=admin).json()["items"] == []
    assert_every_route_serves(infected)

    # A rescan repeats the detection; the admin's judgement stands.
    version_id = version_row(runtime, infected.document_id).id
    job = scan_job(runtime, version_id)
    with runtime.clinical.session() as session:
        assert queue.retry(session, job.id) is not None
        session.commit()
    assert drain(runtime) == 3  # the rescan, and the preview and text the release queued
    assert version_row(runtime, infected.document_id).scan_state == ScanState.RELEASED
    assert_every_route_serves(infected)

    # Released is no longer in quarantine: nothing left to decide.
    again = _decide(anon_client, infected, "destroy", admin)
    assert again.status_code == 409
    assert again.json()["type"] == PROBLEM_TYPE_BASE + Conflict.slug


def test_a_destroyed_version_is_gone_for_good(
    infected: World, runtime: Runtime, anon_client: TestClient, make_user: UserFactory
) -> None:
    admin = _headers(anon_client, make_user, Role.ADMIN)
    key = version_row(runtime, infected.document_id).storage_key
    assert runtime.blobs.exists(key)

    destroyed = _decide(anon_client, infected, "destroy", admin)
    assert destroyed.status_code == 200, destroyed.text
    assert destroyed.json()["state"] == "destroyed"
    assert not runtime.blobs.exists(key)
    assert version_row(runtime, infected.document_id).state == VersionState.DESTROYED
    (event,) = audit_events(runtime, "document.version.destroyed", outcome="success")
    assert event.resource_id == infected.document_id
    assert event.details["reason"] == REASON["reason"]
    assert anon_client.get(QUARANTINE, headers=admin).json()["items"] == []
    assert_every_route_refuses(infected, ContentDestroyed)

    for decision in DECISIONS:
        refused = _decide(anon_client, infected, decision, admin)
        assert refused.status_code == 409, decision
    for action in DECISIONS.values():
        assert len(audit_events(runtime, action, outcome="failure")) == 1, action


def test_a_clean_version_cannot_be_released_or_destroyed(
    app: FastAPI,
    runtime: Runtime,
    client: TestClient,
    anon_client: TestClient,
    make_user: UserFactory,
) -> None:
    admin = _headers(anon_client, make_user, Role.ADMIN)
    with content_world(app, runtime, client, make_user, pdf_bytes(8000)) as world:
        drain(runtime)
        assert version_row(runtime, world.document_id).scan_state == ScanState.CLEAN
        for decision, action in DECISIONS.items():
            refused = _decide(anon_client, world, decision, admin)
            assert refused.status_code == 409, decision
            assert refused.json()["type"] == PROBLEM_TYPE_BASE + Conflict.slug
            (event,) = audit_events(runtime, action, outcome="failure")
            assert event.resource_id == world.document_id
        assert _decide(anon_client, world, "destroy", admin, number=2).status_code == 404
        assert runtime.blobs.exists(version_row(runtime, world.document_id).storage_key)
        assert_every_route_serves(world)


def test_a_refused_duplicate_upload_leaves_no_job(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    content = pdf_bytes(6000)
    assert upload_raw(client, patient, content).status_code == 201
    jobs, stored = job_count(runtime), stored_state(runtime)
    assert job_count(runtime, kinds.SCAN) == 1

    duplicate = upload_raw(client, patient, content)
    assert duplicate.status_code == 409
    assert duplicate.json()["type"] == PROBLEM_TYPE_BASE + "duplicate-document"
    assert (job_count(runtime), stored_state(runtime)) == (jobs, stored)


def test_a_transaction_arms_one_scan_per_document(
    app: FastAPI, runtime: Runtime, api_token: str
) -> None:
    with fhir_client(app, api_token) as fhir:
        patient = create_patient(fhir)
        first, second = binary_entry(pdf_bytes()), binary_entry(pdf_bytes())
        sent = bundle(
            first, reference_entry(patient, first), second, reference_entry(patient, second)
        )
        response = post_resource(fhir, "/fhir", sent)
    assert response.status_code == 200, response.text
    assert job_count(runtime, kinds.SCAN) == 2
    drain(runtime)
    assert job_count(runtime, kinds.SCAN) == 2  # done, still on record


# Each case fails after every payload streamed; the first two after the first document's
# rows, and its scan job, were already added to the transaction.
@pytest.mark.parametrize(
    ("case", "status"),
    [("duplicate content", 409), ("unknown patient", 422), ("invalid type", 422)],
)
def test_a_transaction_that_rolls_back_leaves_no_job(
    app: FastAPI, runtime: Runtime, api_token: str, case: str, status: int
) -> None:
    with fhir_client(app, api_token) as fhir:
        patient = create_patient(fhir)
        jobs, stored = job_count(runtime), stored_state(runtime)
        response = post_resource(fhir, "/fhir", _broken(patient, case))
    assert response.status_code == status, response.text
    assert (job_count(runtime), stored_state(runtime)) == (jobs, stored)
    assert drain(runtime) == 0
