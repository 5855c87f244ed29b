"""Synthetic users of every role, and logging them in through the real API."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
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


UserFactory = Callable[..., MadeUser]


@pytest.fixture
def make_user(runtime: Runtime) -> UserFactory:
    """Create a user through the service (as the CLI would); returns its password too."""

    def make(role: Role = Role.CLINICIAN, *, patient_id: str | None = None) -> MadeUser:
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

    return make


def login(client: TestClient, username: str, password: str, **headers: str) -> Any:
    return client.post(
        "/api/v1/auth/token",
        data={"username": username, "password": password, "grant_type": "password"},
        headers=headers,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
