"""API tokens: scopes, expiry, revocation, and tokens that belong to a user."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Required, TypedDict, Unpack

import pytest
from fastapi.testclient import TestClient

from medvault.auth import service
from medvault.auth.principal import Role
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from tests.support.factories import patient_payload
from tests.support.users import UserFactory, bearer


class TokenOptions(TypedDict, total=False):
    """``create_api_token``'s options that these tests vary."""

    name: Required[str]
    scopes: tuple[str, ...]
    expires_at: datetime | None
    user_id: uuid.UUID | None


def issue(runtime: Runtime, **kwargs: Unpack[TokenOptions]) -> service.IssuedToken:
    with runtime.auth.session() as session:
        issued = service.create_api_token(session=session, **kwargs)
        session.commit()
    return issued


def test_scopes_narrow_a_token(runtime: Runtime, anon_client: TestClient) -> None:
    reader = issue(runtime, name="reader", scopes=("documents:read", "patients:read"))
    headers = bearer(reader.token)
    me = anon_client.get("/api/v1/auth/me", headers=headers).json()
    assert me["token_name"] == "reader" and me["scopes"] == ["documents:read", "patients:read"]
    assert anon_client.get("/api/v1/documents", headers=headers).status_code == 200
    refused = anon_client.post("/api/v1/patients", json=patient_payload(), headers=headers)
    assert refused.status_code == 403


def test_unknown_scopes_and_past_expiry_are_refused(runtime: Runtime) -> None:
    with runtime.auth.session() as session:
        with pytest.raises(ValueError, match="unknown scopes: documents:raed"):
            service.create_api_token(session=session, name="typo", scopes=("documents:raed",))
        with pytest.raises(ValueError, match="past"):
            service.create_api_token(
                session=session, name="late", expires_at=utcnow() - timedelta(seconds=1)
            )


def test_list_and_revoke(runtime: Runtime, anon_client: TestClient, api_token: str) -> None:
    extra = issue(runtime, name="integration", expires_at=utcnow() + timedelta(days=1))
    with runtime.auth.session() as session:
        names = [t.name for t in service.list_api_tokens(session=session)]
        assert names == ["pytest", "integration"]
        assert service.revoke_api_token(session=session, token_id=extra.id) is True
        session.commit()
    assert anon_client.get("/api/v1/auth/me", headers=bearer(extra.token)).status_code == 401
    assert anon_client.get("/api/v1/auth/me", headers=bearer(api_token)).status_code == 200
    with runtime.auth.session() as session:
        assert service.revoke_api_token(session=session, token_id=extra.id) is True  # idempotent
        assert service.revoke_api_token(session=session, token_id=uuid.uuid4()) is False


def test_a_users_token_dies_with_the_account(
    runtime: Runtime, client: TestClient, anon_client: TestClient, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    personal = issue(runtime, name="laptop", user_id=user.id, scopes=("documents:read",))
    assert anon_client.get("/api/v1/documents", headers=bearer(personal.token)).status_code == 200
    assert client.post(f"/api/v1/users/{user.id}/disable").status_code == 200
    assert anon_client.get("/api/v1/documents", headers=bearer(personal.token)).status_code == 401
