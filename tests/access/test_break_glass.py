"""Break-glass through the real header, with real logins."""

from __future__ import annotations

from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events
from tests.support.users import UserFactory, login

REASON = "Patient collapsed in clinic; no care-team clinician on site"


def token_for(client: TestClient, make_user: UserFactory, role: Role, **kw: str) -> str:
    user = make_user(role, **kw)
    return str(login(client, user.username, user.password).json()["access_token"])


def test_clinician_break_glass_works_and_is_flagged(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    patient = create_patient(client)
    content = pdf_bytes()
    doc = upload_raw(client, patient, content).json()["id"]
    token = token_for(client, make_user, Role.CLINICIAN)
    plain = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/documents/{doc}/content"

    assert client.get(url, headers=plain).status_code == 404
    opened = client.get(url, headers={**plain, "X-Break-Glass-Reason": REASON})
    assert opened.status_code == 200 and opened.content == content
    (event,) = [
        e for e in audit_events(runtime, "document.content.read") if e.actor_role == "clinician"
    ]
    assert event.break_glass_reason == REASON
    # The widening lasts one request only.
    assert client.get(url, headers=plain).status_code == 404


def test_break_glass_needs_a_real_reason_and_the_right_role(
    client: TestClient, make_user: UserFactory
) -> None:
    patient = create_patient(client)
    doc = upload_raw(client, patient, pdf_bytes()).json()["id"]
    url = f"/api/v1/documents/{doc}"
    clinician = token_for(client, make_user, Role.CLINICIAN)
    short = client.get(
        url, headers={"Authorization": f"Bearer {clinician}", "X-Break-Glass-Reason": "because"}
    )
    assert short.status_code == 422
    assert short.json()["type"] == "urn:medvault:problem:validation-error"
    for role, extra in ((Role.PATIENT, {"patient_id": create_patient(client)}), (Role.AUDITOR, {})):
        token = token_for(client, make_user, role, **extra)
        refused = client.get(
            url, headers={"Authorization": f"Bearer {token}", "X-Break-Glass-Reason": REASON}
        )
        assert refused.status_code == 403, role
        assert "break-glass" in refused.json()["detail"]


def test_admin_reads_content_only_through_break_glass(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    content = pdf_bytes()
    doc = upload_raw(client, create_patient(client), content).json()["id"]
    admin = {"Authorization": f"Bearer {token_for(client, make_user, Role.ADMIN)}"}
    url = f"/api/v1/documents/{doc}/content"
    assert client.get(f"/api/v1/documents/{doc}", headers=admin).status_code == 200
    assert client.get(url, headers=admin).status_code == 403
    glass = client.get(
        url, headers={**admin, "X-Break-Glass-Reason": "Subject access request 2291"}
    )
    assert glass.status_code == 200 and glass.content == content
    flagged = [e for e in audit_events(runtime, "document.content.read") if e.break_glass_reason]
    assert [e.actor_role for e in flagged] == ["admin"]
