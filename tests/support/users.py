"""Synthetic users of every role, and logging them in through the real API."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Protocol

import httpx
from fastapi.testclient import TestClient

from medvault.audit.context import AuditContext
from medvault.auth import users
from medvault.auth.principal import Role
from medvault.auth.service import commit_with_audit
from medvault.runtime import Runtime


@dataclass(frozen=True)
class MadeUser:
    id: uuid.UUID
    username: str
    password: str
    role: Role
    patient_id: uuid.UUID | None


class UserFactory(Protocol):
    """The ``make_user`` fixture: a new user of ``role`` on the test's runtime."""

    def __call__(
        self, role: Role = Role.CLINICIAN, *, patient_id: str | None = None
    ) -> MadeUser: ...


def create_user(runtime: Runtime, role: Role, *, patient_id: str | None = None) -> MadeUser:
    """Create a user through the service (as the CLI would); returns its password too."""
    username = f"{role.value}-{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_urlsafe(16)}"
    with runtime.auth.session() as auth, runtime.clinical.session() as clinical:
        user = users.create(
            auth_session=auth,
            clinical_session=clinical,
            username=username,
            email=f"{username}@hospital.example",
            password=password,
            role=role,
            patient_id=uuid.UUID(patient_id) if patient_id else None,
            context=AuditContext.system("pytest"),
        )
        commit_with_audit(auth_session=auth, clinical_session=clinical)
    return MadeUser(user.id, username, password, role, user.patient_id)


def login(client: TestClient, username: str, password: str, **headers: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/v1/auth/token",
        data={"username": username, "password": password, "grant_type": "password"},
        headers=headers,
    )
    return response


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
