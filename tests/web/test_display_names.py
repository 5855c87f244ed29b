"""People, not usernames (issue 14, item 4): an admin gives a user a display name and a
profession, and every page shows "Dr Priya Patel, GP" where it showed "clinician-1a2b".
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.audit.models import AuditEvent
from medvault.auth.models import User
from tests.support.portal import post_form
from tests.web.portal_world import Practice

BOTH = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)
LABEL = "Dr Priya Patel, GP"


def _name_the_clinician(practice: Practice, admin: TestClient) -> None:
    clinician = practice.users["clinician"]
    saved = post_form(
        admin,
        f"/admin/users/{clinician.id}/profile",
        {"display_name": "  Dr   Priya Patel ", "profession": "GP"},
    )
    assert saved.status_code == 200
    assert f"{clinician.username} is now shown as “{LABEL}”." in saved.text


@BOTH
def test_a_display_name_replaces_the_username_everywhere(practice: Practice) -> None:
    clinician = practice.users["clinician"]
    with practice.browser("admin") as admin:
        _name_the_clinician(practice, admin)
        assert f"<td>\n      {LABEL}" in admin.get("/admin/users").text
    with practice.runtime.auth.session() as session:
        user = session.get(User, clinician.id)
        assert user is not None
        assert (user.display_name, user.profession) == ("Dr Priya Patel", "GP")
    with practice.browser("clinician") as browser:
        # The header says who is logged in, by name.
        assert f'<span class="who">{LABEL} ' in browser.get("/documents").text
        browser.get(f"/documents/{practice.own_doc}")
    with practice.browser("auditor") as auditor:
        log = auditor.get("/audit").text
        assert LABEL in log and clinician.username not in log
    # The patient is told who opened their record, by name and role, never by username.
    with practice.browser("patient") as patient:
        history = patient.get("/audit/access-history").text
        assert f"{LABEL} (a clinician)" in history
        assert clinician.username not in history
    # Changing a name is audited like any change to an account.
    with practice.runtime.clinical.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.profile")
        ).all()
    assert [e.resource_id for e in events] == [str(clinician.id)]


def test_names_are_bounded_and_refusals_change_nothing(practice: Practice) -> None:
    clinician = practice.users["clinician"]
    with practice.browser("admin") as admin:
        refused = post_form(
            admin, f"/admin/users/{clinician.id}/profile", {"display_name": "x" * 101}
        )
        assert "at most 100 characters" in refused.text
    with practice.runtime.auth.session() as session:
        user = session.get(User, clinician.id)
        assert user is not None and user.display_name is None
    with practice.browser("clinician") as browser:
        forbidden = post_form(
            browser, f"/admin/users/{clinician.id}/profile", {"display_name": "Self promoted"}
        )
        assert forbidden.status_code == 403
    with practice.runtime.auth.session() as session:
        user = session.get(User, clinician.id)
        assert user is not None and user.display_name is None


def test_the_api_creates_users_with_a_display_name(practice: Practice) -> None:
    created = practice.service.post(
        "/api/v1/users",
        json={
            "username": "nurse.jones",
            "email": "nurse.jones@hospital.example",
            "password": "a-long-initial-password",
            "role": "clinician",
            "display_name": "Sam Jones",
            "profession": "Practice nurse",
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["display_name"], body["profession"]) == ("Sam Jones", "Practice nurse")
    too_long = practice.service.post(
        "/api/v1/users",
        json={
            "username": "nurse.long",
            "email": "nurse.long@hospital.example",
            "password": "a-long-initial-password",
            "role": "clinician",
            "display_name": "y" * 101,
        },
    )
    assert too_long.status_code == 422
    assert too_long.headers["content-type"].startswith("application/problem+json")
