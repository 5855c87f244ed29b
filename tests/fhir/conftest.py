"""Fixtures for the FHIR tests: validating clients, and a small hospital of people."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from tests.fhir.support import People, fhir_client
from tests.support.factories import create_patient
from tests.support.users import UserFactory, login


@pytest.fixture
def fhir(app: FastAPI, api_token: str) -> Iterator[TestClient]:
    """The service account (scope *), every FHIR response validated."""
    with fhir_client(app, api_token) as client:
        yield client


@pytest.fixture
def fhir_anon(app: FastAPI) -> Iterator[TestClient]:
    with fhir_client(app) as client:
        yield client


@pytest.fixture
def people(app: FastAPI, fhir: TestClient, make_user: UserFactory) -> Iterator[People]:
    patient_a, patient_b = create_patient(fhir), create_patient(fhir)
    clinician = make_user(Role.CLINICIAN)
    patient_user = make_user(Role.PATIENT, patient_id=patient_a)
    auditor = make_user(Role.AUDITOR)
    admin = make_user(Role.ADMIN)
    added = fhir.post(
        "/api/v1/care-teams",
        json={"clinician_id": str(clinician.id), "patient_id": patient_a},
    )
    assert added.status_code == 201, added.text
    with ExitStack() as stack:
        clients = {}
        for name, user in (
            ("clinician", clinician),
            ("patient", patient_user),
            ("auditor", auditor),
            ("admin", admin),
        ):
            response = login(fhir, user.username, user.password)
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
            clients[name] = stack.enter_context(fhir_client(app, token))
        yield People(
            patient_a=patient_a,
            patient_b=patient_b,
            clinician_id=str(clinician.id),
            patient_user_id=str(patient_user.id),
            **clients,
        )
