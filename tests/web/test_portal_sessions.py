"""Portal sessions over real HTTP semantics: cookies, CSRF, idle expiry, logout, disabling.

These run on both backends (the browser scenarios run on SQLite only).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from medvault.auth.models import WebSession
from medvault.kit.clock import utcnow
from tests.support.inspect import audit_events
from tests.support.portal import csrf_token, portal_login, post_form
from tests.web.portal_world import Practice

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)


def test_login_sets_a_strict_httponly_cookie_and_lands_on_documents(practice: Practice) -> None:
    with TestClient(practice.app) as browser:
        user = practice.users["clinician"]
        response = portal_login(browser, user.username, user.password)
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "medvault_session=mvw_" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        # Over plain HTTP the cookie cannot be Secure (the browser would drop it).
        assert "Secure" not in cookie
        landing = browser.get("/")
        assert landing.url.path == "/documents"
        assert "Own lab report" in landing.text


def test_secure_cookie_over_https(practice: Practice) -> None:
    with TestClient(practice.app, base_url="https://testserver") as browser:
        user = practice.users["patient"]
        response = portal_login(browser, user.username, user.password)
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-medvault_session=") and "Secure" in cookie
        assert browser.get("/documents").status_code == 200


def test_wrong_password_is_refused_and_audited(practice: Practice) -> None:
    with TestClient(practice.app) as browser:
        user = practice.users["clinician"]
        response = portal_login(browser, user.username, "not-the-password")
        assert response.status_code == 401
        assert "username or password is wrong" in response.text
        assert "medvault_session" not in response.headers.get("set-cookie", "")
        assert browser.get("/documents", follow_redirects=False).status_code == 303
    failures = [e for e in audit_events(practice.runtime, "auth.login") if e.outcome != "success"]
    assert failures and failures[-1].details["reason"] == "wrong-password"


def test_login_form_without_its_csrf_token_is_refused(practice: Practice) -> None:
    with TestClient(practice.app) as browser:
        user = practice.users["clinician"]
        response = browser.post(
            "/login",
            data={"username": user.username, "password": user.password},
            follow_redirects=False,
        )
        assert response.status_code == 403
        assert "medvault_session" not in response.headers.get("set-cookie", "")


def test_a_form_post_without_the_csrf_token_changes_nothing(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        refused = browser.post(
            f"/documents/{practice.own_doc}/delete", data={"reason": "forged request"}
        )
        assert refused.status_code == 403
        assert "did not come from this site" in refused.text
        forged = browser.post(
            f"/documents/{practice.own_doc}/delete",
            data={"reason": "forged request", "csrf_token": "0" * 64},
        )
        assert forged.status_code == 403
    still_there = practice.service.get(f"/api/v1/documents/{practice.own_doc}").json()
    assert still_there["status"] == "current"


def test_the_csrf_token_of_one_session_does_not_work_in_another(practice: Practice) -> None:
    with practice.browser("clinician") as first, practice.browser("clinician") as second:
        stolen = csrf_token(first)
        refused = second.post(
            f"/documents/{practice.own_doc}/delete",
            data={"reason": "cross-session", "csrf_token": stolen},
        )
        assert refused.status_code == 403


def test_idle_sessions_expire(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        assert browser.get("/documents").status_code == 200
        idle = practice.runtime.settings.web_session_idle_seconds
        with practice.runtime.auth.session() as session:
            session.execute(
                update(WebSession).values(last_seen_at=utcnow() - timedelta(seconds=idle + 5))
            )
            session.commit()
        # The edit stands in for time passing, which no cached resolution outlives (its
        # valid_until ends before the idle limit: tests/auth/test_principal_cache.py).
        practice.runtime.principals.web.clear()
        response = browser.get("/documents", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/documents"


def test_logout_ends_the_session_on_the_server(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        cookie = browser.cookies.get("medvault_session")
        assert post_form(browser, "/logout", {}, follow_redirects=False).status_code == 303
    # Replaying the old cookie (say, copied before logout) gets nowhere.
    with TestClient(practice.app) as replay:
        replay.cookies.set("medvault_session", cookie or "")
        assert replay.get("/documents", follow_redirects=False).status_code == 303
    assert audit_events(practice.runtime, "auth.logout")


def test_disabling_a_user_ends_their_portal_session_at_once(practice: Practice) -> None:
    with practice.browser("clinician") as browser, practice.browser("admin") as admin:
        assert browser.get("/documents").status_code == 200
        clinician = practice.users["clinician"]
        done = post_form(admin, f"/admin/users/{clinician.id}/disable", {}, follow_redirects=False)
        assert done.status_code == 303
        assert browser.get("/documents", follow_redirects=False).status_code == 303
        # And the form login refuses them too.
        with TestClient(practice.app) as again:
            assert portal_login(again, clinician.username, clinician.password).status_code == 401


def test_open_redirects_are_not_followed_after_login(practice: Practice) -> None:
    with TestClient(practice.app) as browser:
        browser.get("/login")
        user = practice.users["patient"]
        response = browser.post(
            "/login",
            data={
                "username": user.username,
                "password": user.password,
                "next": "//evil.example/phish",
                "csrf_token": browser.cookies.get("medvault_login_csrf") or "",
            },
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/"


def test_activity_keeps_a_session_alive_with_throttled_writes(practice: Practice) -> None:
    def last_seen() -> datetime:
        with practice.runtime.auth.read_session() as session:
            return session.scalars(select(WebSession.last_seen_at)).one()

    with practice.browser("patient") as browser:
        browser.get("/documents")
        first = last_seen()
        browser.get("/documents")
        assert last_seen() == first  # within the touch interval: no write
        with practice.runtime.auth.session() as session:
            session.execute(update(WebSession).values(last_seen_at=utcnow() - timedelta(minutes=5)))
            session.commit()
        practice.runtime.principals.web.clear()  # as above: time passing, by hand
        assert browser.get("/documents", follow_redirects=False).status_code == 200
        moved = last_seen()
        assert isinstance(moved, datetime) and utcnow() - moved < timedelta(seconds=30)


def test_only_portal_paths_answer_errors_as_pages(practice: Practice) -> None:
    with TestClient(practice.app, raise_server_exceptions=False) as visitor:
        page = visitor.post("/documents", data={})
        assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
        for path in ("/api/v1/documents", "/no-such-page"):
            problem = visitor.get(path)
            assert problem.headers["content-type"] == "application/problem+json", path
