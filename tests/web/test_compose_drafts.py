"""Create document never loses work (issue 14, item 2): the form autosaves, sealed, and
comes back after a timeout and a new login; a warning offers to stay logged in.

Before: the 15-minute idle limit ended the session without a word, and after logging
in again the half-written letter was gone.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from medvault.auth import repository as auth_repository
from medvault.auth.models import WebSession
from medvault.auth.principal import Role
from medvault.documents.compose import autosave
from medvault.documents.models import ComposeDraft
from medvault.documents.rotation import rotate_keys
from medvault.kit.clock import utcnow
from tests.support.browser import PageFactory
from tests.support.portal import csrf_token, post_form
from tests.support.users import UserFactory
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

BOTH = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)


def _draft_fields(practice: Practice) -> dict[str, str]:
    return {
        "patient_id": practice.own,
        "document_type": "11488-4",
        "title": "Cardiology follow-up",
        "medications-0-name": "Bisoprolol",
        "medications-0-dose": "2.5 mg",
        "medications-1-name": "",
    }


def _row(practice: Practice, role: str = "clinician") -> ComposeDraft | None:
    with practice.runtime.clinical.session() as session:
        return session.scalar(
            select(ComposeDraft).where(ComposeDraft.user_id == practice.users[role].id)
        )


def _load(practice: Practice, role: str = "clinician") -> autosave.SavedDraft | None:
    with practice.runtime.clinical.session() as session:
        return autosave.load(
            session, keyring=practice.runtime.current_keyring(), user_id=practice.users[role].id
        )


@BOTH
def test_an_autosaved_draft_is_sealed_and_comes_back_in_the_form(
    practice: Practice, make_user: UserFactory
) -> None:
    practice.users["colleague"] = make_user(Role.CLINICIAN)
    with practice.browser("clinician") as browser:
        saved = browser.post(
            "/compose/draft",
            data=_draft_fields(practice),
            headers={"X-CSRF-Token": csrf_token(browser)},
        )
        assert saved.status_code == 200 and "saved_at" in saved.json()
        row = _row(practice)
        assert row is not None
        for clinical in (b"Bisoprolol", b"Cardiology", practice.own.encode()):
            assert clinical not in row.sealed and clinical not in row.wrapped_dek
        draft = _load(practice)
        assert draft is not None
        # Only the form's own, non-blank fields: no CSRF token, no blank spare row.
        assert draft.values == {k: v for k, v in _draft_fields(practice).items() if v}

        form = browser.get("/compose")
        assert form.status_code == 200
        assert 'value="Cardiology follow-up"' in form.text
        assert 'value="Bisoprolol"' in form.text
        assert "This is the document you were writing" in form.text
    # Another clinician's form is empty: a draft is its author's only.
    with practice.browser("colleague") as other:
        form = other.get("/compose")
        assert form.status_code == 200 and "Cardiology follow-up" not in form.text


@BOTH
def test_a_stored_document_and_a_discard_end_the_draft(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        headers = {"X-CSRF-Token": csrf_token(browser)}
        browser.post("/compose/draft", data=_draft_fields(practice), headers=headers)
        discarded = post_form(browser, "/compose/draft/discard", {}, follow_redirects=False)
        assert discarded.status_code == 303 and discarded.headers["location"] == "/compose"
        assert _row(practice) is None
        assert 'value="Cardiology follow-up"' not in browser.get("/compose").text

        browser.post("/compose/draft", data=_draft_fields(practice), headers=headers)
        fields = _draft_fields(practice) | {"medications-0-route": "oral"}
        fields["medications-0-frequency"] = "once daily"
        preview = post_form(browser, "/compose/preview", fields)
        assert preview.status_code == 200
        hidden = dict(
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', preview.text)
        )
        stored = browser.post("/compose/confirm", data=hidden, follow_redirects=False)
        assert stored.status_code == 303 and "created=1" in stored.headers["location"]
        assert _row(practice) is None
        # "Confirm & upload" says what it did.
        shown = browser.get(stored.headers["location"])
        assert "The document is stored in the record." in shown.text


def test_a_draft_for_another_patient_waits_until_asked_for(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        headers = {"X-CSRF-Token": csrf_token(browser)}
        browser.post("/compose/draft", data=_draft_fields(practice), headers=headers)
        other = browser.get(f"/compose?patient={practice.foreign}")
        assert "Cardiology follow-up" not in other.text
        assert "A document you were writing for another patient is saved" in other.text
        back = browser.get("/compose?restore=1")
        assert 'value="Cardiology follow-up"' in back.text


def test_drafts_refused_change_nothing(practice: Practice) -> None:
    # Who may not open Create document may not keep a draft of it either.
    for role in ("patient", "admin", "auditor"):
        with practice.browser(role) as browser:
            headers = {"X-CSRF-Token": csrf_token(browser, "/")}
            refused = browser.post("/compose/draft", data=_draft_fields(practice), headers=headers)
            assert refused.status_code == 403, role
            assert _row(practice, role) is None
            discard = browser.post("/compose/draft/discard", headers=headers)
            assert discard.status_code == 403, role
    with practice.browser("clinician") as browser:
        forged = browser.post("/compose/draft", data=_draft_fields(practice))
        assert forged.status_code == 403
        assert _row(practice) is None
        huge = browser.post(
            "/compose/draft",
            data={"title": "x", "notes": "y" * (autosave.MAX_DRAFT_BYTES + 1)},
            # As portal.js asks: a script gets problem+json, a page an error page.
            headers={"X-CSRF-Token": csrf_token(browser), "Accept": "application/json"},
        )
        assert huge.status_code == 413
        assert huge.headers["content-type"].startswith("application/problem+json")
        assert huge.json()["type"] == "urn:medvault:problem:draft-too-large"
        assert _row(practice) is None


def test_drafts_expire_and_key_rotation_rewraps_them(practice: Practice) -> None:
    runtime = practice.runtime
    user_id = practice.users["clinician"].id
    with runtime.clinical.session() as session:
        autosave.save(
            session,
            keyring=runtime.current_keyring(),
            user_id=user_id,
            values={"title": "Old"},
            now=utcnow() - autosave.DRAFT_TTL - timedelta(minutes=1),
        )
        session.commit()
    assert _load(practice) is None, "a draft past its TTL is not given back"
    with runtime.clinical.session() as session:
        autosave.save(
            session,
            keyring=runtime.current_keyring(),
            user_id=uuid.UUID(str(user_id)),
            values={"title": "Current"},
        )
        session.commit()
    # The expired one was swept by the save; the new one is the user's only draft.
    with runtime.clinical.session() as session:
        assert len(session.scalars(select(ComposeDraft)).all()) == 1
    before = _row(practice)
    assert before is not None
    rotate_keys(runtime=runtime)
    after = _row(practice)
    assert after is not None and after.kek_id != before.kek_id
    assert after.kek_id == runtime.current_keyring().active_id
    draft = _load(practice)
    assert draft is not None and draft.values == {"title": "Current"}


@BOTH
def test_keepalive_restarts_the_idle_clock(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        with practice.runtime.auth.session() as session:
            session.execute(
                update(WebSession)
                .where(WebSession.user_id == practice.users["clinician"].id)
                .values(last_seen_at=utcnow() - timedelta(seconds=20))
            )
            session.commit()
        assert browser.post("/session/keepalive").status_code == 403  # no CSRF token
        kept = browser.post("/session/keepalive", headers={"X-CSRF-Token": csrf_token(browser)})
        assert kept.status_code == 204
        with practice.runtime.auth.session() as session:
            seen = session.scalar(
                select(WebSession.last_seen_at).where(
                    WebSession.user_id == practice.users["clinician"].id
                )
            )
        assert seen is not None and utcnow() - seen < timedelta(seconds=10)


def _expire_sessions(practice: Practice, role: str) -> None:
    """What the idle limit does: the session's last activity falls past the limit."""
    idle = practice.runtime.settings.web_session_idle_seconds
    with practice.runtime.auth.session() as session:
        session.execute(
            update(WebSession)
            .where(WebSession.user_id == practice.users[role].id)
            .values(last_seen_at=utcnow() - timedelta(seconds=idle + 1))
        )
        auth_repository.bump_auth_epoch(session)
        session.commit()


def _write_letter(page: Page, practice: Practice) -> None:
    page.goto("/compose")
    page.get_by_label("Patient").select_option(practice.own)
    page.get_by_label("Title").fill("Letter after the ward round")
    page.locator("#medications-0-name").fill("Bisoprolol")


def test_a_timed_out_letter_comes_back_after_logging_in(
    page: PageFactory, practice: Practice
) -> None:
    desktop = page()
    user = practice.users["clinician"]
    ui_login(desktop, user.username, user.password)
    _write_letter(desktop, practice)
    expect(desktop.locator("[data-autosave-status]")).to_contain_text(
        "Draft saved at", timeout=15_000
    )
    _expire_sessions(practice, "clinician")
    desktop.reload()
    expect(desktop).to_have_url(re.compile(r"/login\?next=/compose$"))
    desktop.get_by_label("Username").fill(user.username)
    desktop.get_by_label("Password").fill(user.password)
    desktop.get_by_role("button", name="Log in").click()
    expect(desktop).to_have_url(re.compile(r"/compose$"))
    expect(desktop.get_by_label("Title")).to_have_value("Letter after the ward round")
    expect(desktop.locator("#medications-0-name")).to_have_value("Bisoprolol")
    expect(desktop.get_by_label("Patient")).to_have_value(practice.own)
    expect(desktop.get_by_role("status").first).to_contain_text(
        "This is the document you were writing"
    )


def test_the_idle_warning_keeps_the_session_or_ends_it_with_the_draft_saved(
    page: PageFactory, practice: Practice
) -> None:
    desktop = page()
    desktop.clock.install()
    user = practice.users["clinician"]
    ui_login(desktop, user.username, user.password)
    _write_letter(desktop, practice)
    idle_ms = int(
        desktop.locator('meta[name="session-idle-seconds"]').get_attribute("content") or 0
    )
    idle_ms *= 1000
    lead_ms = min(120_000, idle_ms // 4)
    dialog = desktop.get_by_role("dialog", name="Are you still there?")
    # The autosave runs five seconds after the typing; the countdown restarts from it.
    desktop.clock.run_for(6_000)
    expect(desktop.locator("[data-autosave-status]")).to_contain_text("Draft saved at")
    desktop.clock.run_for(idle_ms - lead_ms - 5_000)
    expect(dialog).to_be_hidden()
    desktop.clock.run_for(10_000)
    expect(dialog).to_be_visible()
    stay = dialog.get_by_role("button", name="Stay logged in")
    expect(stay).to_be_focused()
    with desktop.expect_response(re.compile(r"/session/keepalive$")) as kept:
        stay.click()
    assert kept.value.status == 204
    expect(dialog).to_be_hidden()

    # Typed after the keep-alive, then left alone past the limit: saved, logged out.
    desktop.get_by_label("Notes").fill("Reviewed on the ward.")
    desktop.clock.run_for(idle_ms + 1_000)
    expect(dialog).to_contain_text("You have been logged out")
    expect(dialog.get_by_role("link", name="Log in again")).to_be_focused()
    expect(desktop.locator("#main")).to_be_hidden()
    draft = _load(practice)
    assert draft is not None and draft.values["notes"] == "Reviewed on the ward."
    assert desktop.context.request.get("/compose", max_redirects=0).status == 303
