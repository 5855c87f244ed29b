"""User and care-team administration over HTTP, and the rules users are held to."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.support.inspect import audit_rows
from tests.support.users import UserFactory, bearer, login


def new_user(**overrides: Any) -> dict[str, Any]:
    name = f"user-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {
        "username": name,
        "email": f"{name}@hospital.example",
        "password": "long-enough-password",
        "role": "clinician",
    }
    body.update(overrides)
    return body


def test_create_list_get_disable_enable(client: TestClient, runtime: Runtime) -> None:
    created = client.post("/api/v1/users", json=new_user(username="Dr.Who_1", email="W@X.Example"))
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["username"] == "dr.who_1" and user["email"] == "w@x.example"
    assert "password" not in created.text and "argon2" not in created.text
    assert created.headers["location"] == f"/api/v1/users/{user['id']}"

    listed = client.get("/api/v1/users").json()["items"]
    assert [u["username"] for u in listed] == ["dr.who_1"]
    assert client.get("/api/v1/users", params={"role": "auditor"}).json()["items"] == []
    assert client.get(f"/api/v1/users/{user['id']}").json() == user
    assert client.get(f"/api/v1/users/{uuid.uuid4()}").status_code == 404

    assert client.post(f"/api/v1/users/{user['id']}/disable").json()["disabled_at"]
    assert client.post(f"/api/v1/users/{user['id']}/disable").status_code == 200  # idempotent
    assert client.post(f"/api/v1/users/{user['id']}/enable").json()["disabled_at"] is None

    events = audit_rows(runtime, "user.create", "user.disable", "user.enable")
    assert [e.action for e in events] == ["user.create", "user.disable", "user.enable"]
    assert all(e.actor_id.startswith("api_token:") for e in events)
    assert events[0].details == {"username": "dr.who_1", "role": "clinician"}


@pytest.mark.parametrize(
    ("changes", "status", "problem"),
    [
        ({"username": "ab"}, 422, "validation-error"),
        ({"username": "has space"}, 422, "invalid-user"),
        ({"username": "ümlaut"}, 422, "invalid-user"),
        ({"email": "not-an-email"}, 422, "invalid-user"),
        ({"email": "two@@example.org"}, 422, "invalid-user"),
        ({"email": "nodot@localhost"}, 422, "invalid-user"),
        ({"password": "short"}, 422, "invalid-user"),
        ({"role": "service"}, 422, "validation-error"),
        ({"role": "patient"}, 422, "invalid-user"),
        ({"role": "clinician", "patient_id": str(uuid.uuid4())}, 422, "invalid-user"),
        ({"role": "patient", "patient_id": str(uuid.uuid4())}, 422, "unknown-patient"),
        ({"is_admin": True}, 422, "validation-error"),
    ],
)
def test_invalid_users_are_refused(
    client: TestClient, runtime: Runtime, changes: dict[str, Any], status: int, problem: str
) -> None:
    response = client.post("/api/v1/users", json=new_user(**changes))
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"urn:medvault:problem:{problem}"
    assert client.get("/api/v1/users").json()["items"] == []
    assert audit_rows(runtime, "user.create") == []
    if "password" in changes:
        assert changes["password"] not in response.text


def test_duplicates_are_conflicts(client: TestClient) -> None:
    first = new_user()
    assert client.post("/api/v1/users", json=first).status_code == 201
    again = client.post("/api/v1/users", json=new_user(username=first["username"].upper()))
    assert again.status_code == 409 and again.json()["type"].endswith("duplicate-user")
    same_email = client.post("/api/v1/users", json=new_user(email=first["email"]))
    assert same_email.status_code == 409


def test_last_admin_cannot_be_disabled(client: TestClient, make_user: UserFactory) -> None:
    admin = make_user(Role.ADMIN)
    refused = client.post(f"/api/v1/users/{admin.id}/disable")
    assert refused.status_code == 409
    second = make_user(Role.ADMIN)
    assert client.post(f"/api/v1/users/{admin.id}/disable").status_code == 200
    assert client.post(f"/api/v1/users/{second.id}/disable").status_code == 409


def test_only_admins_administer(
    anon_client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    admin, clinician = make_user(Role.ADMIN), make_user(Role.CLINICIAN)
    as_admin = bearer(login(anon_client, admin.username, admin.password).json()["access_token"])
    as_clinician = bearer(
        login(anon_client, clinician.username, clinician.password).json()["access_token"]
    )
    assert anon_client.get("/api/v1/users", headers=as_admin).status_code == 200
    created = anon_client.post("/api/v1/users", json=new_user(), headers=as_admin)
    assert created.status_code == 201
    (event,) = audit_rows(runtime, "user.create")[-1:]
    assert event.actor_id == f"user:{admin.id}" and event.actor_role == "admin"
    for method, path in [
        ("GET", "/api/v1/users"),
        ("POST", f"/api/v1/users/{admin.id}/disable"),
        ("GET", "/api/v1/care-teams"),
    ]:
        response = anon_client.request(method, path, headers=as_clinician)
        assert response.status_code == 403, path
    assert (
        anon_client.post("/api/v1/users", json=new_user(), headers=as_clinician).status_code == 403
    )
    assert anon_client.get("/api/v1/users").status_code == 401
    assert audit_rows(runtime, "access.denied")
