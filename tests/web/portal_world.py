"""A small synthetic practice for portal tests: two patients, one care team, every role."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.support.factories import create_patient, put_on_care_team, text_pdf_bytes, upload_raw
from tests.support.jobs import run_due_jobs
from tests.support.portal import portal_login
from tests.support.users import MadeUser, UserFactory


@dataclass
class Practice:
    app: FastAPI
    runtime: Runtime
    service: TestClient
    own: str  # patient A: on the clinician's care team, and the patient user's record
    foreign: str  # patient B: nobody's
    own_doc: str
    foreign_doc: str
    users: dict[str, MadeUser]

    @contextmanager
    def browser(self, role: str) -> Iterator[TestClient]:
        """A cookie-holding client logged in through the portal's form as ``role``."""
        with TestClient(self.app, raise_server_exceptions=False) as client:
            user = self.users[role]
            response = portal_login(client, user.username, user.password)
            assert response.status_code == 303, response.text
            yield client


def build_practice(
    app: FastAPI, runtime: Runtime, service: TestClient, make_user: UserFactory
) -> Practice:
    own = create_patient(service, family_name="Ownfamily", given_name="Alicia")
    foreign = create_patient(service, family_name="Otherfamily", given_name="Boris")
    own_doc = upload_raw(
        service, own, text_pdf_bytes("Full blood count"), title="Own lab report"
    ).json()["id"]
    foreign_doc = upload_raw(
        service, foreign, text_pdf_bytes("Chest X-ray"), title="Foreign scan"
    ).json()["id"]
    users = {
        "admin": make_user(Role.ADMIN),
        "clinician": make_user(Role.CLINICIAN),
        "patient": make_user(Role.PATIENT, patient_id=own),
        "auditor": make_user(Role.AUDITOR),
    }
    put_on_care_team(runtime, clinician_id=users["clinician"].id, patient_id=own)
    # Previews and text, as a running worker would have made them by now.
    run_due_jobs(runtime)
    return Practice(app, runtime, service, own, foreign, own_doc, foreign_doc, users)
