"""Login sessions over HTTP: password login, rotating refresh tokens, logout, /me."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from medvault.audit.context import AuditContext
from medvault.auth import users
from medvault.auth.jwt_tokens import AUDIENCE, ISSUER, issue_access_token
from medvault.auth.principal import Role
from medvault.auth.service import commit_with_audit
from medvault.crypto.signing_keys import SigningKey
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from tests.support.factories import create_patient
from tests.support.inspect import audit_rows
from tests.support.users import UserFactory, bearer, login

UNAUTHORIZED = "urn:medvault:problem:unauthorized"


def refresh(client: TestClient, token: str) -> httpx.Response:
    response: httpx.Response = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    return response


def me(client: TestClient, access: str) -> httpx.Response:
    response: httpx.Response = client.get("/api/v1/auth/me", headers=bearer(access))
    return response


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["type"] == UNAUTHORIZED
    assert response.headers["content-type"] == "application/problem+json"


def test_login_me_refresh_logout(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    response = login(anon_client, user.username.upper(), user.password)  # case-insensitive
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == runtime.settings.access_token_ttl_seconds == 900
    assert body["refresh_token"].startswith("mvr_")

    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "EdDSA", "kid": runtime.jwt_key.key_id, "typ": "JWT"}
    claims = jwt.decode(
        body["access_token"],
        runtime.jwt_key.public_key,
        algorithms=["EdDSA"],
        audience="medvault:api",
        issuer="medvault",
    )
    assert claims["sub"] == str(user.id) and claims["role"] == "clinician"
    assert claims["exp"] - claims["iat"] == 900
    assert "pid" not in claims and claims["jti"] and uuid.UUID(claims["sid"])

    who = me(anon_client, body["access_token"])
    assert who.status_code == 200
    assert who.json() == {
        "kind": "user",
        "id": str(user.id),
        "role": "clinician",
        "username": user.username,
        "patient_id": None,
        "token_name": None,
        "scopes": [],
    }
    # A logged-in clinician is a working principal for the rest of the API.
    listed = anon_client.get("/api/v1/documents", headers=bearer(body["access_token"]))
    assert listed.status_code == 200

    renewed = refresh(anon_client, body["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    pair = renewed.json()
    assert pair["refresh_token"] != body["refresh_token"]
    new_claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert new_claims["sid"] == claims["sid"]  # same session, next link of the chain
    assert me(anon_client, pair["access_token"]).status_code == 200

    out = anon_client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    assert out.status_code == 204
    assert_unauthorized(me(anon_client, pair["access_token"]))
    assert_unauthorized(me(anon_client, body["access_token"]))
    assert_unauthorized(refresh(anon_client, pair["refresh_token"]))

    with runtime.auth.session() as session:
        assert users.get(session=session, user_id=user.id).last_login_at is not None
    actions = [e.action for e in audit_rows(runtime, "auth.login", "auth.logout")]
    assert actions == ["auth.login", "auth.logout"]


def test_patient_user_carries_their_patient(
    client: TestClient, anon_client: TestClient, make_user: UserFactory
) -> None:
    patient_id = create_patient(client)
    user = make_user(Role.PATIENT, patient_id=patient_id)
    access = login(anon_client, user.username, user.password).json()["access_token"]
    assert jwt.decode(access, options={"verify_signature": False})["pid"] == patient_id
    assert me(anon_client, access).json()["patient_id"] == patient_id
    assert (
        anon_client.get(f"/api/v1/patients/{patient_id}", headers=bearer(access)).status_code == 200
    )
    other = create_patient(client)
    assert anon_client.get(f"/api/v1/patients/{other}", headers=bearer(access)).status_code == 404


def test_service_token_me(client: TestClient) -> None:
    body = client.get("/api/v1/auth/me").json()
    assert body["kind"] == "api_token" and body["token_name"] == "pytest"
    assert body["scopes"] == ["*"] and body["role"] == "service" and body["username"] is None


def test_reusing_a_refresh_token_revokes_its_whole_family(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    first = login(anon_client, user.username, user.password).json()
    other_session = login(anon_client, user.username, user.password).json()
    second = refresh(anon_client, first["refresh_token"]).json()
    assert me(anon_client, second["access_token"]).status_code == 200

    # The first token again: a thief (or the victim) replays it.
    assert_unauthorized(refresh(anon_client, first["refresh_token"]))
    # The newest link of that chain is dead too, and so is its access token...
    assert_unauthorized(refresh(anon_client, second["refresh_token"]))
    assert_unauthorized(me(anon_client, second["access_token"]))
    # ...but the user's other session carries on.
    assert me(anon_client, other_session["access_token"]).status_code == 200
    assert refresh(anon_client, other_session["refresh_token"]).status_code == 200

    # Both presentations of a dead token are alarms; only the first had anything to revoke.
    first_alarm, second_alarm = audit_rows(runtime, "auth.refresh.reuse")
    assert first_alarm.outcome == second_alarm.outcome == "failure"
    assert first_alarm.actor_id == f"user:{user.id}"
    assert (
        first_alarm.details["session_id"]
        == jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    )
    assert first_alarm.details["tokens_revoked"] == 2  # `first` (used) and `second`
    assert second_alarm.details["tokens_revoked"] == 0


def test_disabled_user_is_locked_out_at_once(
    client: TestClient, anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    tokens = login(anon_client, user.username, user.password).json()
    assert me(anon_client, tokens["access_token"]).status_code == 200

    disabled = client.post(f"/api/v1/users/{user.id}/disable")
    assert disabled.status_code == 200 and disabled.json()["disabled_at"]

    assert_unauthorized(me(anon_client, tokens["access_token"]))  # the very next request
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))
    refused = login(anon_client, user.username, user.password)
    wrong = login(anon_client, user.username, "not-the-password-at-all")
    assert refused.status_code == wrong.status_code == 401
    assert refused.json()["detail"] == wrong.json()["detail"]  # no hint that it is disabled

    assert client.post(f"/api/v1/users/{user.id}/enable").status_code == 200
    assert login(anon_client, user.username, user.password).status_code == 200
    # Sessions from before the lock-out stay ended.
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))
    assert [e.details.get("reason") for e in audit_rows(runtime, "auth.login")] == [
        None,
        "user-disabled",
        "wrong-password",
        None,
    ]


def test_password_change_ends_every_session(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    user = make_user(Role.AUDITOR)
    tokens = login(anon_client, user.username, user.password).json()
    with runtime.auth.session() as auth, runtime.clinical.session() as clinical:
        users.change_password(
            auth_session=auth,
            clinical_session=clinical,
            user_id=user.id,
            new_password="a-brand-new-passphrase",
            current_password=user.password,
            context=AuditContext.system("pytest"),
        )
        commit_with_audit(auth_session=auth, clinical_session=clinical)
    assert_unauthorized(me(anon_client, tokens["access_token"]))
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))
    assert login(anon_client, user.username, user.password).status_code == 401
    assert login(anon_client, user.username, "a-brand-new-passphrase").status_code == 200


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_bad_access_tokens_are_refused(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    good = login(anon_client, user.username, user.password).json()["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    sid = uuid.UUID(claims["sid"])
    key = runtime.jwt_key
    now = utcnow()

    def sign(payload: dict[str, object], signer: SigningKey = key, **headers: str) -> str:
        return jwt.encode(
            payload,
            signer.private_key,
            algorithm="EdDSA",
            headers={"kid": signer.key_id, **headers},
        )

    expired = issue_access_token(
        key=key,
        user_id=user.id,
        role=Role.CLINICIAN,
        patient_id=None,
        session_id=sid,
        now=now - timedelta(hours=1),
        ttl_seconds=900,
    )
    head, _, signature = good.split(".")
    tampered_claims = {**claims, "role": "admin"}
    tampered = f"{head}.{_b64(tampered_claims)}.{signature}"
    stranger = SigningKey(private_key=Ed25519PrivateKey.generate(), key_id=key.key_id)
    unsigned = jwt.encode(claims, "", algorithm="none")  # alg "none": the key "" is no key
    bad_tokens = {
        "expired": expired,
        "tampered": tampered,
        "wrong key, same kid": sign(claims, stranger),
        "unknown kid": sign(claims, SigningKey(Ed25519PrivateKey.generate(), "other-key")),
        "wrong audience": sign({**claims, "aud": "someone-else"}),
        "wrong issuer": sign({**claims, "iss": "not-medvault"}),
        "no expiry": sign({k: v for k, v in claims.items() if k != "exp"}),
        "alg none": unsigned,
        "unknown user": sign({**claims, "sub": str(uuid.uuid4())}),
        "unknown session": sign({**claims, "sid": str(uuid.uuid4())}),
        "garbage": "not.a.jwt",
        "looks like an api token": "mvt_" + "x" * 43,
    }
    for name, token in bad_tokens.items():
        response = me(anon_client, token)
        assert response.status_code == 401, name
        assert response.json()["type"] == UNAUTHORIZED, name
    assert me(anon_client, good).status_code == 200
    assert ISSUER == "medvault" and AUDIENCE == "medvault:api"


@pytest.mark.parametrize("attempt", ["wrong-password", "unknown-user"])
def test_failed_logins_look_alike_and_are_audited(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory, attempt: str
) -> None:
    user = make_user(Role.CLINICIAN)
    username = user.username if attempt == "wrong-password" else "Tr0ub4dor&3-typed-here"
    response = login(anon_client, username, "definitely-wrong-password", **{"User-Agent": "ua/1"})
    assert response.status_code == 401
    assert response.json()["detail"] == (
        "The username or password is wrong, or the account is disabled."
    )
    (event,) = audit_rows(runtime, "auth.login")
    assert event.outcome == "failure" and event.details["reason"] == attempt
    assert event.user_agent == "ua/1" and event.client_ip == "testclient"
    if attempt == "wrong-password":
        assert event.actor_id == f"user:{user.id}"
        assert event.details["username"] == user.username
    else:
        assert event.actor_id == "anonymous" and event.resource_id is None
        assert "username" not in event.details
        assert "Tr0ub4dor" not in json.dumps(event.details)


def test_login_needs_the_password_grant(anon_client: TestClient, make_user: UserFactory) -> None:
    user = make_user(Role.CLINICIAN)
    response = anon_client.post(
        "/api/v1/auth/token",
        data={"username": user.username, "password": user.password, "grant_type": "implicit"},
    )
    assert response.status_code == 422
    assert anon_client.post("/api/v1/auth/token", data={"username": "x"}).status_code == 422


def test_logout_with_only_the_refresh_token(
    anon_client: TestClient, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    tokens = login(anon_client, user.username, user.password).json()
    out = anon_client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    assert_unauthorized(me(anon_client, tokens["access_token"]))
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))
    assert_unauthorized(anon_client.post("/api/v1/auth/logout"))
    assert_unauthorized(anon_client.post("/api/v1/auth/logout", headers=bearer("not.a.jwt")))


def test_logout_with_a_stale_access_token_still_ends_the_session(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    user = make_user(Role.CLINICIAN)
    tokens = login(anon_client, user.username, user.password).json()
    sid = uuid.UUID(jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"])
    stale = issue_access_token(
        key=runtime.jwt_key,
        user_id=user.id,
        role=Role.CLINICIAN,
        patient_id=None,
        session_id=sid,
        now=utcnow() - timedelta(hours=1),
        ttl_seconds=900,
    )
    out = anon_client.post(
        "/api/v1/auth/logout",
        headers=bearer(stale),
        json={"refresh_token": tokens["refresh_token"]},
    )
    assert out.status_code == 204
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))
    assert_unauthorized(me(anon_client, tokens["access_token"]))
    # An unknown refresh token ends nothing, and says so no differently.
    assert (
        anon_client.post("/api/v1/auth/logout", json={"refresh_token": "mvr_unknown"}).status_code
        == 204
    )


def test_expired_refresh_token_is_refused_without_alarm(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    from sqlalchemy import update

    from medvault.auth.models import RefreshToken

    user = make_user(Role.CLINICIAN)
    tokens = login(anon_client, user.username, user.password).json()
    with runtime.auth.session() as session:
        session.execute(update(RefreshToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))
    assert_unauthorized(refresh(anon_client, tokens["refresh_token"]))  # a retry: still no alarm
    assert audit_rows(runtime, "auth.refresh.reuse") == []
    assert me(anon_client, tokens["access_token"]).status_code == 200  # the session is not revoked
