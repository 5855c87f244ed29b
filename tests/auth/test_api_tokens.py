"""API tokens: stored only as hashes, revocable, expiring."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.auth.models import ApiToken
from medvault.auth.service import create_api_token, revoke_api_token
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime


def test_only_a_hash_is_stored(runtime: Runtime, api_token: str) -> None:
    with runtime.auth.session() as session:
        row = session.scalars(select(ApiToken)).one()
    assert row.token_hash != api_token and len(row.token_hash) == 64
    assert api_token[4:] not in row.token_hash
    if runtime.auth.is_sqlite:
        assert runtime.auth.url.database
        raw = b"".join(
            p.read_bytes() for p in Path(runtime.auth.url.database).parent.glob("auth.db*")
        )
        assert api_token.encode() not in raw


def test_revoked_and_expired_tokens_stop_working(
    client: TestClient, anon_client: TestClient, runtime: Runtime
) -> None:
    # A token's expiry never changes, so it is waited for rather than edited: the first
    # request puts the principal in the cache, which must still end it on time.
    with runtime.auth.session() as session:
        soon = create_api_token(
            session=session, name="expiring", expires_at=utcnow() + timedelta(seconds=1.5)
        )
        session.commit()
        expires_at = session.get_one(ApiToken, soon.id).expires_at
    assert expires_at is not None
    headers = {"Authorization": f"Bearer {soon.token}"}
    assert anon_client.get("/api/v1/documents", headers=headers).status_code == 200
    time.sleep(max(0.0, (expires_at - utcnow()).total_seconds()) + 0.05)
    assert anon_client.get("/api/v1/documents", headers=headers).status_code == 401
    assert client.get("/api/v1/documents").status_code == 200
    with runtime.auth.session() as session:
        for token in session.scalars(select(ApiToken)).all():
            revoke_api_token(session=session, token_id=token.id)
        session.commit()
    assert client.get("/api/v1/documents").status_code == 401


def test_openapi_is_published(anon_client: TestClient) -> None:
    schema = anon_client.get("/openapi.json").json()
    assert "/api/v1/documents" in schema["paths"]
    assert (
        "multipart/form-data"
        in schema["paths"]["/api/v1/documents"]["post"]["requestBody"]["content"]
    )
    docs = anon_client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
