"""The portal's authorization matrix, generated from the app's route table.

Every portal route must appear here, or this test fails: each page states what every
role gets for its own patient's record and a foreign one. Every state-changing route
refuses a visitor without a session (401) and a session without its CSRF token (403).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.processing import kinds, queue
from tests.access.test_authorization_matrix import is_portal_route
from tests.support.factories import pdf_bytes
from tests.support.portal import csrf_token
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
    # "Your data": a patient's own exports (no patient id in the URL).
    "/my-data": (fixed("/my-data"), {**dict.fromkeys(ROLES, 403), "patient": 200}),
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
        .replace("{upload_id}", str(uuid.UUID(int=7)))
        .replace("{export_id}", str(uuid.UUID(int=7)))
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
                response = visitor.request(method, url, data={}, follow_redirects=False)
                expected = PUBLIC_POSTS.get(path, 401)
                if path != "/login":  # an empty login form is its own page (tests/auth)
                    assert response.status_code == expected, (method, path, response.status_code)


def test_every_state_change_needs_the_csrf_token(practice: Practice) -> None:
    changes = sorted((m, p) for m, p in portal_routes(practice.app) if m != "GET" and p != "/login")
    assert len(changes) >= 15
    for role in ROLES:
        with practice.browser(role) as browser:
            for method, path in changes:
                url = _concrete(path, practice)
                response = browser.request(method, url, data={"reason": "x" * 20})
                assert response.status_code == 403, (role, method, path, response.status_code)


# The portal's resumable uploads (tus, /upload/resumable), per role: creating one for
# the role's own patient and for the other one (unknown to them: 422, as for any upload,
# whether it exists or not); then HEAD, PATCH and DELETE on the caller's own upload and
# on somebody else's, which nobody else sees (404). Admins and auditors may not upload
# at all: 403 whatever the upload.
UPLOADER = {"POST": (201, 422), "HEAD": (200, 404), "PATCH": (204, 404), "DELETE": (204, 404)}
NO_UPLOADS = dict.fromkeys(("POST", "HEAD", "PATCH", "DELETE"), (403, 403))
RESUMABLE: dict[str, dict[str, tuple[int, int]]] = {
    "patient": UPLOADER,
    "clinician": UPLOADER,
    "admin": NO_UPLOADS,
    "auditor": NO_UPLOADS,
}
_TUS = {"Tus-Resumable": "1.0.0", "Accept": "application/json"}


def _tus_metadata(patient_id: str) -> str:
    fields = {"patient_id": patient_id, "document_type": "11502-2", "filename": "scan.pdf"}
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def _create(client: TestClient, token: str, patient_id: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/upload/resumable",
        headers={
            **_TUS,
            "X-CSRF-Token": token,
            "Upload-Length": "10000",
            "Upload-Metadata": _tus_metadata(patient_id),
        },
    )
    return response


def test_resumable_uploads_by_role(practice: Practice) -> None:
    route_paths = {path for _, path in portal_routes(practice.app)}
    assert {"/upload/resumable", "/upload/resumable/{upload_id}"} <= route_paths
    failures: list[str] = []
    # Somebody else's uploads: the clinician's and the patient's, for the patient both
    # may upload for.
    made: dict[str, str] = {}
    for maker in ("clinician", "patient"):
        with practice.browser(maker) as browser:
            answer = _create(browser, csrf_token(browser), practice.own)
            assert answer.status_code == 201, answer.text
            made[maker] = answer.headers["Location"]
    for role in ROLES:
        strangers = made["patient" if role == "clinician" else "clinician"]
        with practice.browser(role) as browser:
            token = csrf_token(browser, "/audit" if role == "auditor" else "/documents")
            cells = RESUMABLE[role]
            created = [_create(browser, token, practice.own)]
            created.append(_create(browser, token, practice.foreign))
            for index, got in enumerate(created):
                if got.status_code != cells["POST"][index]:
                    failures.append(f"{role} POST for patient {index}: {got.status_code}")
            # The caller's own upload, or (for a role that may not upload) any id.
            own = created[0].headers.get("Location") or f"/upload/resumable/{uuid.uuid4()}"
            for index, url in enumerate((own, strangers)):
                answers = {
                    "HEAD": browser.head(url, headers=_TUS),
                    "PATCH": browser.patch(
                        url,
                        content=pdf_bytes(4000),
                        headers={
                            **_TUS,
                            "X-CSRF-Token": token,
                            "Upload-Offset": "0",
                            "Content-Type": "application/offset+octet-stream",
                        },
                    ),
                    "DELETE": browser.delete(url, headers={**_TUS, "X-CSRF-Token": token}),
                }
                for method, answer in answers.items():
                    wanted = cells[method][index]
                    if answer.status_code != wanted:
                        failures.append(f"{role} {method} {url}: {answer.status_code} != {wanted}")
                    # Every answer, refusals too, speaks tus and is never cached.
                    assert answer.headers.get("Tus-Resumable") == "1.0.0", (role, method)
                    assert answer.headers.get("Cache-Control") == "no-store", (role, method)
    assert not failures, "\n".join(failures)
    # Nobody but their creators ended these uploads.
    for maker, url in made.items():
        with practice.browser(maker) as browser:
            assert browser.head(url, headers=_TUS).status_code == 200, maker
