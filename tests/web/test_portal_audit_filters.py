"""The auditor's log browser asks about people, not ids (issue 14, item 7).

Before: the patient filter wanted a raw UUID ("The patient id is not a valid id." for a
name, and the box cleared), the actor filter an actor id, there was no "emergency
access only" view, the auditor's own reads crowded the top, and the Patient column
showed the first eight characters of a UUID.
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.auth.principal import Role
from medvault.patients.models import Patient
from tests.support.browser import PageFactory, check_accessibility
from tests.support.portal import post_form
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

BOTH = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)
OWN_LABEL = "OWNFAMILY, Alicia"
EVENT_ROW = re.compile(r'<tr class="[^"]*">\s*<td class="num">(\d+)</td>')


def _emergency_read(practice: Practice, reason: str = "Collapsed in clinic") -> int:
    """A clinician's break-glass read of the foreign patient's document, as the log has it."""
    clinician = practice.users["clinician"]
    with practice.runtime.clinical.session() as session:
        event = audit.record(
            session=session,
            context=AuditContext(
                actor_id=f"user:{clinician.id}",
                actor_role=Role.CLINICIAN.value,
                client_ip=None,
                user_agent=None,
                request_id=None,
                break_glass_reason=reason,
            ),
            action="document.content.read",
            resource_type="Document",
            resource_id=practice.foreign_doc,
            patient_id=uuid.UUID(practice.foreign),
        )
        session.commit()
        return int(event.id)


def _events(practice: Practice, text: str) -> list[AuditEvent]:
    ids = [int(found) for found in EVENT_ROW.findall(text)]
    with practice.runtime.clinical.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.id.in_(ids))))


@BOTH
def test_a_patient_by_name_or_identifier_and_a_user_by_username(practice: Practice) -> None:
    with practice.browser("clinician") as clinician:
        clinician.get(f"/documents/{practice.own_doc}")
    with practice.browser("auditor") as auditor:
        answer = post_form(auditor, "/audit", {"patient": "ownf ali"}, follow_redirects=False)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert re.fullmatch(r"/audit\?view=[\w-]{22}", location)
        shown = auditor.get(location)
        assert shown.status_code == 200
        events = _events(practice, shown.text)
        assert events and {e.patient_id for e in events} == {uuid.UUID(practice.own)}
        # Names, not ids, in the Patient column and in the box.
        assert OWN_LABEL in shown.text and f'value="{OWN_LABEL}' in shown.text
        assert f">{practice.own[:8]}…<" not in shown.text

        # The identifier as people type it, with spaces.
        with practice.runtime.clinical.session() as session:
            own = session.get(Patient, uuid.UUID(practice.own))
            assert own is not None
            spaced = " ".join(re.findall(r".{1,3}", own.identifier_value))
        by_identifier = post_form(auditor, "/audit", {"patient": spaced})
        assert {e.patient_id for e in _events(practice, by_identifier.text)} == {
            uuid.UUID(practice.own)
        }

        name = practice.users["clinician"].username
        by_user = post_form(auditor, "/audit", {"actor": name})
        actors = {e.actor_id for e in _events(practice, by_user.text)}
        assert actors == {f"user:{practice.users['clinician'].id}"}


def test_refused_filters_say_why_and_keep_what_was_typed(practice: Practice) -> None:
    with practice.browser("auditor") as auditor:
        nobody = post_form(auditor, "/audit", {"patient": "Nosuchname", "action": "x.y"})
        assert nobody.status_code == 422
        assert "No patient matches “Nosuchname”." in nobody.text
        assert 'value="Nosuchname"' in nobody.text and 'value="x.y"' in nobody.text
        unknown = post_form(auditor, "/audit", {"actor": "nobody-here"})
        assert unknown.status_code == 422 and "No user is called “nobody-here”." in unknown.text
        # Two patients start with "o" (Ownfamily, Otherfamily): which one?
        several = post_form(auditor, "/audit", {"patient": "o"})
        assert several.status_code == 422
        assert "2 patients match" in several.text
        choices = re.findall(r'name="patient" value="([0-9a-f-]{36})"', several.text)
        assert set(choices) == {practice.own, practice.foreign}
        chosen = post_form(auditor, "/audit", {"patient": practice.foreign})
        assert chosen.status_code == 200
        assert {e.patient_id for e in _events(practice, chosen.text)} <= {
            uuid.UUID(practice.foreign)
        }
        # Every lookup by name is itself audited, without the name.
    with practice.runtime.clinical.session() as session:
        lookups = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "audit.patient.lookup")
        ).all()
    assert len(lookups) >= 2
    assert all("Nosuchname" not in str(e.details) for e in lookups)


@BOTH
def test_emergency_only_and_hiding_my_own_reads(practice: Practice) -> None:
    flagged = _emergency_read(practice)
    with practice.browser("auditor") as auditor:
        for _ in range(3):
            auditor.get("/audit")  # the auditor's own reads of the log
        emergency = post_form(auditor, "/audit", {"emergency_only": "on"})
        events = _events(practice, emergency.text)
        assert [e.id for e in events] == [flagged]
        assert "Collapsed in clinic" in emergency.text
        assert "OTHERFAMILY, Boris" in emergency.text

        everything = _events(practice, auditor.get("/audit").text)
        me = f"user:{practice.users['auditor'].id}"
        assert any(e.actor_id == me for e in everything)
        hidden = _events(practice, post_form(auditor, "/audit", {"hide_mine": "on"}).text)
        assert hidden and all(e.actor_id != me for e in hidden)


def test_only_auditors_filter_the_log(practice: Practice) -> None:
    for role in ("patient", "clinician", "admin"):
        with practice.browser(role) as browser:
            refused = post_form(browser, "/audit", {"patient": "Ownfamily"})
            assert refused.status_code == 403, role
            assert OWN_LABEL not in refused.text


def test_an_auditor_finds_an_emergency_access_by_name_in_chromium(
    page: PageFactory, practice: Practice
) -> None:
    _emergency_read(practice, reason="Unconscious, no ID")
    desktop = page()
    user = practice.users["auditor"]
    ui_login(desktop, user.username, user.password)
    desktop.get_by_label("Patient").fill("other boris")
    desktop.get_by_label("Emergency access only").check()
    desktop.get_by_role("button", name="Filter").click()
    expect(desktop).to_have_url(re.compile(r"/audit\?view="))
    table = desktop.get_by_role("table")
    expect(table).to_contain_text("OTHERFAMILY, Boris")
    expect(table).to_contain_text("Unconscious, no ID")
    expect(desktop.get_by_label("Patient")).to_have_value(re.compile("^OTHERFAMILY, Boris"))
    expect(desktop.get_by_label("Emergency access only")).to_be_checked()
    assert "boris" not in desktop.url.lower()
    check_accessibility(desktop)
    desktop.reload()
    expect(table).to_contain_text("Unconscious, no ID")
