"""SMART scopes on API tokens, mapped onto the access policy (REST and FHIR alike)."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medvault.access import smart_scopes
from medvault.access.policy import Permission
from medvault.auth import service as auth_service
from medvault.auth.principal import Role
from medvault.cli.app import app as cli
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.fhir.support import entries, fhir_client
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.users import UserFactory


def issue(runtime: Runtime, *scopes: str, user_id: uuid.UUID | None = None) -> str:
    with runtime.auth.session() as session:
        issued = auth_service.create_api_token(
            session=session, name="smart", scopes=scopes, user_id=user_id
        )
        session.commit()
    return issued.token


def test_every_granted_permission_is_a_real_one() -> None:
    real = {permission.value for permission in Permission}
    for grants in smart_scopes.GRANTS.values():
        for permissions in grants.values():
            assert permissions <= real


@pytest.mark.parametrize(
    ("scopes", "granted"),
    [
        (("user/DocumentReference.read",), {"documents:read"}),
        (("system/DocumentReference.rs",), {"documents:read"}),
        (("user/DocumentReference.write",), {"documents:write", "documents:delete"}),
        (("user/DocumentReference.cud",), {"documents:write", "documents:delete"}),
        (("user/Binary.read", "user/Patient.read"), {"documents:content", "patients:read"}),
        (("user/AuditEvent.*",), {"audit:read"}),
        (
            ("user/*.read",),
            {"documents:read", "documents:content", "patients:read", "audit:read"},
        ),
        (("documents:read",), set()),  # the vault's own names are not SMART scopes
    ],
)
def test_scopes_grant_their_permissions(scopes: tuple[str, ...], granted: set[str]) -> None:
    assert smart_scopes.permissions(frozenset(scopes)) == granted


@pytest.mark.parametrize(
    "scope",
    [
        "user/Observation.read",  # a resource the vault does not serve
        "user/DocumentReference.rc",  # v2 letters out of order
        "user/DocumentReference.read?category=x",  # v2 query parameters
        "launch/patient",
        "practitioner/*.read",
    ],
)
def test_scopes_the_vault_cannot_honour_are_refused(runtime: Runtime, scope: str) -> None:
    with runtime.auth.session() as session, pytest.raises(ValueError):
        auth_service.create_api_token(session=session, name="bad", scopes=(scope,))


def test_a_user_scope_reads_but_does_not_write(
    app: FastAPI, runtime: Runtime, fhir: TestClient
) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    token = issue(runtime, "user/DocumentReference.read", "user/Patient.read")
    with fhir_client(app, token) as reader:
        found = reader.get("/fhir/DocumentReference", params={"patient": patient}).json()
        assert [r["id"] for r in entries(found)] == [doc["id"]]
        # The same mapping holds on the REST API.
        assert reader.get(f"/api/v1/documents/{doc['id']}").status_code == 200
        # Content needs Binary.read, deleting needs DocumentReference.write.
        url = entries(found)[0]["content"][0]["attachment"]["url"]
        assert reader.get(url).status_code == 403
        refused = reader.delete(f"/fhir/DocumentReference/{doc['id']}")
        assert refused.status_code == 403
        assert refused.json()["issue"][0]["code"] == "forbidden"
        assert reader.get("/fhir/AuditEvent").status_code == 403


def test_a_patient_scope_binds_the_token_to_its_users_patient(
    app: FastAPI, runtime: Runtime, fhir: TestClient, make_user: UserFactory
) -> None:
    own, other = create_patient(fhir), create_patient(fhir)
    own_doc = upload_raw(fhir, own, pdf_bytes()).json()
    other_doc = upload_raw(fhir, other, pdf_bytes()).json()
    user = make_user(Role.PATIENT, patient_id=own)
    token = issue(runtime, "patient/*.read", user_id=user.id)
    with fhir_client(app, token) as app_client:
        everything = app_client.get("/fhir/DocumentReference").json()
        assert [r["id"] for r in entries(everything)] == [own_doc["id"]]
        assert app_client.get(f"/fhir/DocumentReference/{other_doc['id']}").status_code == 404
        assert app_client.get(f"/fhir/Patient/{other}").status_code == 404
        assert app_client.get(f"/fhir/Patient/{own}").status_code == 200
        url = entries(everything)[0]["content"][0]["attachment"]["url"]
        assert app_client.get(url).status_code == 200


def test_a_patient_scope_without_a_patient_reaches_nobody(
    app: FastAPI, runtime: Runtime, fhir: TestClient
) -> None:
    patient = create_patient(fhir)
    upload_raw(fhir, patient, pdf_bytes())
    # Mixing in a user/ scope never widens a patient/ token.
    token = issue(runtime, "patient/*.read", "user/*.read")
    with fhir_client(app, token) as unbound:
        bundle = unbound.get("/fhir/DocumentReference").json()
        assert bundle["total"] == 0
        assert unbound.get(f"/fhir/Patient/{patient}").status_code == 404


def test_the_cli_binds_a_patient_scoped_token_to_a_user(
    app: FastAPI, runtime: Runtime, fhir: TestClient, make_user: UserFactory
) -> None:
    own, other = create_patient(fhir), create_patient(fhir)
    upload_raw(fhir, own, pdf_bytes())
    upload_raw(fhir, other, pdf_bytes())
    user = make_user(Role.PATIENT, patient_id=own)
    env = server_env(runtime.settings)
    runner = CliRunner()
    made = runner.invoke(
        cli,
        ["token", "create", "--name", "app", "--scope", "patient/*.read", "--user", user.username],
        env=env,
    )
    assert made.exit_code == 0, made.output
    with fhir_client(app, made.stdout.strip()) as app_client:
        found = app_client.get("/fhir/DocumentReference").json()
        assert {r["subject"]["reference"] for r in entries(found)} == {f"Patient/{own}"}
    unknown = runner.invoke(
        cli, ["token", "create", "--name", "x", "--user", "nobody-at-all"], env=env
    )
    assert unknown.exit_code == 2 and "no user" in unknown.output
