"""Every identity event is audited, and no audit row ever holds a password or a token."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import inspect

from medvault.auth.models import User
from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.support.factories import create_patient
from tests.support.inspect import audit_rows
from tests.support.users import UserFactory, bearer, login

TYPO = "my-password-typed-as-username"


def test_identity_events_are_audited_without_secrets(
    client: TestClient,
    anon_client: TestClient,
    runtime: Runtime,
    make_user: UserFactory,
    api_token: str,
) -> None:
    secrets: list[str] = [api_token, TYPO]
    patient = create_patient(client)

    created = client.post(
        "/api/v1/users",
        json={
            "username": "dr-audit",
            "email": "dr-audit@hospital.example",
            "password": "created-over-http-pass",
            "role": "clinician",
        },
    )
    assert created.status_code == 201
    clinician_id = created.json()["id"]
    secrets.append("created-over-http-pass")

    assert login(anon_client, "dr-audit", "wrong-password-attempt").status_code == 401
    assert login(anon_client, TYPO, "another-wrong-password").status_code == 401
    secrets += ["wrong-password-attempt", "another-wrong-password"]

    first = login(anon_client, "dr-audit", "created-over-http-pass").json()
    second = anon_client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    ).json()
    reuse = anon_client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    third = login(anon_client, "dr-audit", "created-over-http-pass").json()
    for pair in (first, second, third):
        secrets += [pair["access_token"], pair["refresh_token"]]
    assert (
        anon_client.post(
            "/api/v1/auth/logout",
            headers=bearer(third["access_token"]),
            json={"refresh_token": third["refresh_token"]},
        ).status_code
        == 204
    )

    assert (
        client.post(
            "/api/v1/care-teams", json={"clinician_id": clinician_id, "patient_id": patient}
        ).status_code
        == 201
    )
    assert client.delete(f"/api/v1/care-teams/{clinician_id}/{patient}").status_code == 204
    assert client.post(f"/api/v1/users/{clinician_id}/disable").status_code == 200
    assert client.post(f"/api/v1/users/{clinician_id}/enable").status_code == 200
    other = make_user(Role.AUDITOR)
    secrets.append(other.password)

    with runtime.auth.read_session() as session:
        hashes = [u.password_hash for u in session.query(User).all()]
    secrets += hashes

    actions = [event.action for event in audit_rows(runtime)]
    for expected in [
        "user.create",
        "auth.login",
        "auth.refresh.reuse",
        "auth.logout",
        "careteam.add",
        "careteam.remove",
        "user.disable",
        "user.enable",
    ]:
        assert expected in actions, expected
    logins = audit_rows(runtime, "auth.login")
    assert [e.outcome for e in logins] == ["failure", "failure", "success", "success"]

    for event in audit_rows(runtime):
        columns = {
            attr.key: getattr(event, attr.key) for attr in inspect(event).mapper.column_attrs
        }
        dumped = json.dumps(columns, default=str)
        for secret in secrets:
            assert secret not in dumped, (event.action, secret[:12])
        assert "$argon2" not in dumped
        assert "mvr_" not in dumped and "mvt_" not in dumped
