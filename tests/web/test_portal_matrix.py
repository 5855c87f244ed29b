"""The portal's authorization matrix, generated from the app's route table.

Every portal route must appear here, or this test fails: each page states what every
role gets for its own patient's record and a foreign one. Every state-changing route
refuses a visitor without a session (401) and a session without its CSRF token (403).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.processing import kinds, queue
from tests.access.test_authorization_matrix import is_portal_route
from tests.web.portal_world import Practice

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)

ROLES = ("patient", "clinician", "admin", "auditor")
Build = Callable[[Practice, str], str]


def fixed(url: str) -> Build:
    return lambda practice, target: url


def doc(suffix: str = "") -> Build:
    def build(practice: Practice, target: str) -> str:
        document = practice.own_doc if target == "own" else practice.foreign_doc
        return f"/documents/{document}{suffix}"

    return build


def patient(practice: Practice, target: str) -> str:
    return f"/patients/{practice.own if target == 'own' else practice.foreign}"


def verification(practice: Practice, target: str) -> str:
    """ "own": a queued verification (one row, whoever asks); "foreign": no such job."""
    if target == "foreign":
        return f"/audit/verify/{uuid.UUID(int=7)}"
    with practice.runtime.clinical.session() as session:
        job = queue.enqueue(session, kinds.AUDIT_VERIFY, {}, dedupe_key="audit-verify")
        session.commit()
        return f"/audit/verify/{job.id}"


ALL = dict.fromkeys(ROLES, 200)
STAFF = {"patient": 403, "clinician": 200, "admin": 200, "auditor": 403}
ADMIN = {"patient": 403, "clinician": 403, "admin": 200, "auditor": 403}
# (own, foreign) per role where the two differ.
Cells = dict[str, int | tuple[int, int]]
DOC_META: Cells = {"patient": (200, 404), "clinician": (200, 404), "admin": 200, "auditor": 403}
DOC_CONTENT: Cells = {"patient": (200, 404), "clinician": (200, 404), "admin": 403, "auditor": 403}
DOC_DELETE: Cells = {"patient": 403, "clinician": (200, 404), "admin": 200, "auditor": 403}

GET_SPECS: dict[str, tuple[Build, Mapping[str, int | tuple[int, int]]]] = {
    "/": (fixed("/"), ALL),  # a redirect to each role's start page
    "/login": (fixed("/login"), ALL),  # logged in: straight on to the start page
    "/documents": (fixed("/documents"), {**ALL, "auditor": 403}),
    "/documents/{document_id}": (doc(), DOC_META),
    "/documents/{document_id}/download": (doc("/download"), DOC_CONTENT),
    "/documents/{document_id}/view": (doc("/view"), DOC_CONTENT),
    "/documents/{document_id}/preview": (doc("/preview?size=thumbnail"), DOC_CONTENT),
    "/documents/{document_id}/delete": (doc("/delete"), DOC_DELETE),
    "/upload": (fixed("/upload"), {**STAFF, "patient": 200, "admin": 403}),
    "/compose": (fixed("/compose"), {**STAFF, "admin": 403}),
    "/patients": (fixed("/patients"), STAFF),
    "/patients/new": (fixed("/patients/new"), STAFF),
    "/patients/{patient_id}": (
        patient,
        {"patient": 403, "clinician": (200, 404), "admin": 200, "auditor": 403},
    ),
    # By month and type: the patient's own (no id in the URL), or a patient staff reach.
    "/timeline": (fixed("/timeline"), {**dict.fromkeys(ROLES, 403), "patient": 200}),
    "/patients/{patient_id}/timeline": (
        lambda practice, target: f"{patient(practice, target)}/timeline",
        {"patient": 403, "clinician": (200, 404), "admin": 200, "auditor": 403},
    ),
    "/emergency": (fixed("/emergency"), ALL),  # others are sent back to their start page
    "/admin/users": (fixed("/admin/users"), ADMIN),
    "/admin/care-teams": (fixed("/admin/care-teams"), ADMIN),
    "/audit": (fixed("/audit"), {**dict.fromkeys(ROLES, 403), "auditor": 200}),
    # A verification's progress and result: auditors only, like the log.
    "/audit/verify/{job_id}": (
        verification,
        {**dict.fromkeys(ROLES, 403), "auditor": (200, 404)},
    ),
    # "Who viewed my documents": the patient's own record only (no patient id in the URL).
    "/audit/access-history": (
        fixed("/audit/access-history"),
        {**dict.fromkeys(ROLES, 403), "patient": 200},
    ),
}
# POST routes anyone may reach without a session: they check the login form's CSRF
# cookie instead (the language chooser refuses a visitor without it).
PUBLIC_POSTS = {"/login": 200, "/login/language": 403}


def portal_routes(app: FastAPI) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        pairs = (
            [(ctx.path, ctx.original_route) for ctx in contexts()]
            if contexts is not None
            else [(getattr(route, "path", ""), route)]
        )
        for path, original in pairs:
            if not is_portal_route(original) or path == "/static":
                continue
            for method in getattr(original, "methods", None) or ():
                if method != "HEAD":
                    found.add((method, path))
    return found


def test_every_portal_page_has_a_spec(app: FastAPI) -> None:
    pages = {path for method, path in portal_routes(app) if method == "GET"}
    assert pages == set(GET_SPECS), f"add a spec for {sorted(pages ^ set(GET_SPECS))}"


def test_pages_by_role_and_target(practice: Practice) -> None:
    failures = []
    for role in ROLES:
        with practice.browser(role) as browser:
            for path, (build, expect) in GET_SPECS.items():
                wanted = expect[role]
                for index, target in enumerate(("own", "foreign")):
                    status = wanted if isinstance(wanted, int) else wanted[index]
                    url = build(practice, target)
                    got = browser.get(url).status_code
                    if got != status:
                        failures.append(f"{role} GET {url} ({path}, {target}): {got} != {status}")
    assert not failures, "\n".join(failures)


def _concrete(path: str, practice: Practice) -> str:
    return (
        path.replace("{document_id}", practice.own_doc)
        .replace("{patient_id}", practice.own)
        .replace("{user_id}", str(practice.users["clinician"].id))
        .replace("{job_id}", str(uuid.UUID(int=7)))
    )


def test_visitors_without_a_session_are_sent_to_log_in(practice: Practice) -> None:
    with TestClient(practice.app, raise_server_exceptions=False) as visitor:
        for method, path in sorted(portal_routes(practice.app)):
            url = _concrete(path, practice)
            if method == "GET":
                response = visitor.get(url, follow_redirects=False)
                if path == "/login":
                    assert response.status_code == 200
                    continue
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/login"), path
            else:
                response = visitor.post(url, data={}, follow_redirects=False)
                expected = PUBLIC_POSTS.get(path, 401)
                if path != "/login":  # an empty login form is its own page (tests/auth)
                    assert response.status_code == expected, (method, path, response.status_code)


def test_every_state_change_needs_the_csrf_token(practice: Practice) -> None:
    posts = sorted(p for m, p in portal_routes(practice.app) if m == "POST" and p != "/login")
    assert len(posts) >= 15
    for role in ROLES:
        with practice.browser(role) as browser:
            for path in posts:
                response = browser.post(_concrete(path, practice), data={"reason": "x" * 20})
                assert response.status_code == 403, (role, path, response.status_code)
