"""Lists behind opaque view ids (issue 14, item 1).

A posted search or filter answers 303 to ``/documents?view=<id>`` (or ``/patients``),
so Back, reload, paging and "← All documents" replay a GET that keeps the filters,
while no search word or name ever sits in a URL. The filters are kept server-side,
sealed, for the session that saved them only, and go with it at logout.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from playwright.sync_api import Page, Request, expect
from sqlalchemy import func, select

from medvault.auth import session_views
from medvault.auth.models import WebSession, WebSessionView
from medvault.kit.clock import utcnow
from medvault.web.list_views import EXPIRED_NOTICE
from medvault.web.pages import documents as document_pages
from tests.support.browser import PageFactory
from tests.support.portal import post_form
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

# Views live in the auth database: each of these runs on SQLite and on PostgreSQL.
BOTH = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)
VIEW_URL = re.compile(r"^/(documents|patients)\?view=[A-Za-z0-9_-]{22}$")


def _view_count(practice: Practice, session_id: uuid.UUID | None = None) -> int:
    with practice.runtime.auth.session() as session:
        query = select(func.count()).select_from(WebSessionView)
        if session_id is not None:
            query = query.where(WebSessionView.session_id == session_id)
        return int(session.scalar(query) or 0)


def _session_id_of(practice: Practice, role: str) -> uuid.UUID:
    with practice.runtime.auth.session() as session:
        found = session.scalars(
            select(WebSession.id)
            .where(WebSession.user_id == practice.users[role].id, WebSession.revoked_at.is_(None))
            .order_by(WebSession.created_at.desc())
        ).first()
    assert found is not None
    return found


@BOTH
def test_a_posted_search_answers_303_to_an_opaque_view(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        answer = post_form(browser, "/documents", {"q": "blood"}, follow_redirects=False)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert VIEW_URL.match(location) and "blood" not in location
        shown = browser.get(location)
        assert shown.status_code == 200
        # The view replays the search: the words in the box, the match, its snippet.
        assert 'value="blood"' in shown.text
        assert practice.own_doc in shown.text
        assert "<mark>blood</mark>" in shown.text.lower()
        # Its documents link back to it, so "← All documents" returns here.
        view_id = location.split("=", 1)[1]
        assert f"/documents/{practice.own_doc}?from={view_id}" in shown.text
        detail = browser.get(f"/documents/{practice.own_doc}?from={view_id}")
        assert f'href="/documents?view={view_id}"' in detail.text


def test_patient_search_keeps_the_name_out_of_the_url(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        answer = post_form(browser, "/patients", {"text": "Ownfamily"}, follow_redirects=False)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert VIEW_URL.match(location) and "ownfamily" not in location.lower()
        shown = browser.get(location)
        assert 'value="Ownfamily"' in shown.text and "Alicia" in shown.text
        assert "Otherfamily" not in shown.text


@BOTH
def test_a_view_opens_only_in_its_own_session(practice: Practice) -> None:
    with practice.browser("clinician") as first, practice.browser("clinician") as second:
        location = post_form(first, "/documents", {"q": "blood"}, follow_redirects=False)
        stolen = second.get(location.headers["location"])
        assert stolen.status_code == 200
        assert EXPIRED_NOTICE in stolen.text
        assert 'value="blood"' not in stolen.text
        # A made-up id, or one of another list, is no better.
        assert EXPIRED_NOTICE in first.get("/documents?view=" + "A" * 22).text
        other_list = location.headers["location"].replace("/documents", "/patients")
        assert EXPIRED_NOTICE in first.get(other_list).text


def test_bad_filters_answer_422_and_keep_nothing(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        before = _view_count(practice)
        refused = post_form(
            browser, "/documents", {"uploaded_from": "2026-02-01", "uploaded_to": "2026-01-01"}
        )
        assert refused.status_code == 422
        assert "after the" in refused.text
        assert _view_count(practice) == before


def test_patients_and_auditors_cannot_keep_patient_searches(practice: Practice) -> None:
    for role in ("patient", "auditor"):
        with practice.browser(role) as browser:
            before = _view_count(practice)
            answer = post_form(browser, "/patients", {"text": "Ownfamily"}, follow_redirects=False)
            assert answer.status_code == 403
            assert _view_count(practice) == before
    # Nor may an auditor keep a documents search: refused before anything is kept.
    with practice.browser("auditor") as auditor:
        before = _view_count(practice)
        answer = post_form(auditor, "/documents", {"q": "blood"}, follow_redirects=False)
        assert answer.status_code == 403
        assert _view_count(practice) == before


@BOTH
def test_logout_forgets_the_session_views(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        location = post_form(browser, "/documents", {"q": "blood"}, follow_redirects=False).headers[
            "location"
        ]
        session_id = _session_id_of(practice, "clinician")
        assert _view_count(practice, session_id) == 1
        assert post_form(browser, "/logout", {}, follow_redirects=False).status_code == 303
        assert _view_count(practice, session_id) == 0
        assert browser.get(location, follow_redirects=False).status_code in (303, 401)


@BOTH
def test_views_are_sealed_bound_and_bounded(
    practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    with practice.browser("clinician"):
        session_id = _session_id_of(practice, "clinician")
    key = practice.runtime.secret_key
    with practice.runtime.auth.session() as session:
        view_id = session_views.save(
            session,
            secret_key=key,
            session_id=session_id,
            page="documents",
            state={"q": "haemoglobin"},
            max_session_seconds=3600,
        )
        session.commit()
        raw = session.get(WebSessionView, view_id)
        assert raw is not None and b"haemoglobin" not in raw.state

        def opens(
            view: str,
            *,
            page: str = "documents",
            owner: uuid.UUID = session_id,
            secret: bytes = key,
        ) -> dict[str, object] | None:
            return session_views.load(
                session, secret_key=secret, session_id=owner, page=page, view_id=view
            )

        assert opens(view_id) == {"q": "haemoglobin"}
        assert opens(view_id, page="patients") is None
        assert opens(view_id, owner=uuid.uuid4()) is None
        assert opens(view_id, secret=b"x" * 32) is None
        assert opens("../../etc") is None

        # A session keeps its newest views only; views older than any session are swept.
        monkeypatch.setattr(session_views, "MAX_VIEWS_PER_SESSION", 3)
        start = utcnow()
        kept = [
            session_views.save(
                session,
                secret_key=key,
                session_id=session_id,
                page="documents",
                state={"n": n},
                max_session_seconds=3600,
                now=start + timedelta(seconds=n),
            )
            for n in range(1, 6)
        ]
        session.commit()
        left = set(session.scalars(select(WebSessionView.id)).all())
        assert left == set(kept[-3:])
        session_views.save(
            session,
            secret_key=key,
            session_id=session_id,
            page="documents",
            state={"n": 6},
            max_session_seconds=3600,
            now=start + timedelta(hours=2),
        )
        session.commit()
        assert session.scalar(select(func.count()).select_from(WebSessionView)) == 1


def test_back_reload_paging_and_all_documents_keep_the_filters(
    page: PageFactory, practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One document per page, so the practice's two documents make two pages.
    monkeypatch.setattr(document_pages, "PAGE_SIZE", 1)
    desktop = page()
    visited: list[str] = []

    def record(request: Request) -> None:
        visited.append(request.url)

    desktop.on("request", record)
    user = practice.users["admin"]
    ui_login(desktop, user.username, user.password)

    desktop.get_by_label("Sort by").select_option("title")
    desktop.get_by_role("button", name="Apply").click()
    expect(desktop).to_have_url(re.compile(r"/documents\?view="))
    table = desktop.get_by_role("table")
    expect(table.get_by_role("link", name="Foreign scan", exact=True)).to_be_visible()
    first_page = desktop.url

    desktop.get_by_role("button", name="Next page").click()
    expect(table.get_by_role("link", name="Own lab report", exact=True)).to_be_visible()
    second_page = desktop.url
    assert second_page != first_page

    # Reload replays a GET: no resubmission, same page, same filters.
    desktop.reload()
    expect(desktop).to_have_url(second_page)
    expect(table.get_by_role("link", name="Own lab report", exact=True)).to_be_visible()
    expect(desktop.get_by_label("Sort by")).to_have_value("title")

    # Back goes to page 1 of the same filters, not to a "Confirm Form Resubmission".
    desktop.go_back()
    expect(desktop).to_have_url(first_page)
    expect(table.get_by_role("link", name="Foreign scan", exact=True)).to_be_visible()
    expect(desktop.get_by_label("Sort by")).to_have_value("title")

    # Into a document and "← All documents": back to that very page and its filters.
    desktop.go_forward()
    table.get_by_role("link", name="Own lab report", exact=True).click()
    expect(desktop.get_by_role("heading", name="Own lab report")).to_be_visible()
    desktop.get_by_role("link", name="← All documents").click()
    # The same view; only the pager's "put the focus on the results" hint is not kept.
    expect(desktop).to_have_url(second_page.replace("&focus=results", ""))
    expect(desktop.get_by_label("Sort by")).to_have_value("title")

    assert all("title" not in url.split("?", 1)[-1] for url in visited if "?" in url)
    _search_words_never_in_urls(desktop, practice, visited)


def _search_words_never_in_urls(desktop: Page, practice: Practice, visited: list[str]) -> None:
    """A search as a clinician, then Back: the words are in the box, never in a URL."""
    desktop.get_by_role("button", name="Log out").click()
    user = practice.users["clinician"]
    ui_login(desktop, user.username, user.password)
    desktop.get_by_label("Search documents").fill("blood")
    desktop.get_by_role("button", name="Apply").click()
    expect(desktop).to_have_url(re.compile(r"/documents\?view="))
    expect(desktop.get_by_role("link", name="Own lab report", exact=True)).to_be_visible()
    desktop.get_by_role("link", name="Patients").click()
    desktop.get_by_label("Name or identifier").fill("Ownfamily")
    desktop.get_by_role("button", name="Search").click()
    expect(desktop).to_have_url(re.compile(r"/patients\?view="))
    expect(desktop.get_by_label("Name or identifier")).to_have_value("Ownfamily")
    # The post and its 303 leave no history entry: Back is the empty picker, then the
    # documents search, its words back in the box.
    desktop.go_back()
    expect(desktop).to_have_url(re.compile(r"/patients$"))
    desktop.go_back()
    expect(desktop).to_have_url(re.compile(r"/documents\?view="))
    expect(desktop.get_by_label("Search documents")).to_have_value("blood")
    assert visited, "the browser made no requests"
    for url in visited:
        for word in ("blood", "ownfamily", "alicia"):
            assert word not in url.lower(), url
