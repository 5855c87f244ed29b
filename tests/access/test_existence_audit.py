"""Issue 9, defect 10: a missing id and an id out of reach do the same work.

Both answer the same 404. Only the foreign one used to commit an ``access.denied``
event, which made it measurably slower (bench/existence_timing.py measures it); now
both commit exactly one. No timing is asserted here, only the equal work.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.fhir.support import fhir_client
from tests.support.factories import create_patient, upload_raw
from tests.support.inspect import audit_events
from tests.support.users import UserFactory, login

Probe = Callable[[TestClient, str, str], int]


def _rest_document(client: TestClient, document_id: str, _version_id: str) -> int:
    return int(client.get(f"/api/v1/documents/{document_id}").status_code)


def _rest_content(client: TestClient, document_id: str, _version_id: str) -> int:
    return int(client.get(f"/api/v1/documents/{document_id}/content").status_code)


def _fhir_document(client: TestClient, document_id: str, _version_id: str) -> int:
    return int(client.get(f"/fhir/DocumentReference/{document_id}").status_code)


def _fhir_binary(client: TestClient, _document_id: str, version_id: str) -> int:
    return int(client.get(f"/fhir/Binary/{version_id}", headers={"accept": "*/*"}).status_code)


@pytest.mark.parametrize(
    "probe", [_rest_document, _rest_content, _fhir_document, _fhir_binary], ids=lambda p: p.__name__
)
def test_foreign_and_missing_documents_each_commit_one_denial(
    app: FastAPI,
    client: TestClient,
    runtime: Runtime,
    make_user: UserFactory,
    probe: Probe,
) -> None:
    owner = create_patient(client)
    created = upload_raw(client, owner, b"%PDF-1.7\n" + b"x" * 2000)
    assert created.status_code == 201, created.text
    document_id = created.json()["id"]
    version_id = (
        client.get(f"/fhir/DocumentReference/{document_id}")
        .json()["content"][0]["attachment"]["url"]
        .rsplit("/", 1)[-1]
    )
    clinician = make_user(Role.CLINICIAN)  # no care team: the document is out of reach
    token = login(client, clinician.username, clinician.password).json()["access_token"]
    with fhir_client(app, token) as outsider:
        before = len(audit_events(runtime, "access.denied"))
        assert probe(outsider, document_id, version_id) == 404
        foreign = audit_events(runtime, "access.denied")[before:]
        missing_id = str(uuid.uuid4())
        assert probe(outsider, missing_id, missing_id) == 404
        missing = audit_events(runtime, "access.denied")[before + len(foreign) :]
    assert len(foreign) == 1 and len(missing) == 1
    assert str(foreign[0].patient_id) == owner
    assert missing[0].patient_id is None  # no record, so no patient is named
    assert str(missing[0].resource_id) == missing_id
    assert foreign[0].actor_id == missing[0].actor_id


def test_foreign_and_missing_patients_each_commit_one_denial(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    other = create_patient(client)
    clinician = make_user(Role.CLINICIAN)
    token = login(client, clinician.username, clinician.password).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    before = len(audit_events(runtime, "access.denied"))
    assert client.get(f"/api/v1/patients/{other}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/patients/{uuid.uuid4()}", headers=headers).status_code == 404
    events = audit_events(runtime, "access.denied")[before:]
    assert [str(e.patient_id) if e.patient_id else None for e in events] == [other, None]
