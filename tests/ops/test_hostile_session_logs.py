"""A hostile session through REST, FHIR and the portal leaves nothing secret in the log.

Issue 9: one test drives an attacker's session (bad and forged tokens, wrong
passwords, signed links, forbidden reads, 404s, oversized bodies, NUL bytes, huge
ranges, deleted documents) next to a patient's and a clinician's honest use, with
every logger at DEBUG: the root (so SQLAlchemy, which inherits it), uvicorn's own
loggers, and the vault's. The server is real uvicorn with the options ``medvault
serve`` uses. Every secret is a distinctive string, so finding none of them means
something: no token, cookie, signed-link credential, password, file byte, patient
name, birth date, identifier, title or description may appear in any line.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from medvault.auth.principal import Role
from medvault.ops.server import uvicorn_options
from medvault.runtime import Runtime
from medvault.web.session import LOGIN_CSRF_COOKIE
from tests.ops.test_log_redaction import server_side
from tests.support.factories import NHS_SYSTEM
from tests.support.live_server import LiveServer
from tests.support.users import UserFactory

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server(app: FastAPI, runtime: Runtime) -> Iterator[LiveServer]:
    options = uvicorn_options(runtime.settings)
    with LiveServer(app, access_log=False, **options) as live:
        yield live


@pytest.fixture
def captured(server: LiveServer) -> Iterator[Capture]:
    """Every record from now on, from every logger, at DEBUG (uvicorn does not propagate)."""
    capture = Capture()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", *UVICORN_LOGGERS)}
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for name in UVICORN_LOGGERS:
        logging.getLogger(name).addHandler(capture)
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        for name in UVICORN_LOGGERS:
            logging.getLogger(name).removeHandler(capture)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class Secrets:
    """Distinctive values, each of which must never be logged."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.family = f"Zyxwarthenova{tag}"
        self.given = f"Quillabeth{tag}"
        self.birth_date = "1931-07-29"
        self.identifier = f"9{secrets.randbelow(10**9):09d}"
        self.title = f"Confidential-title-asthma-{tag}"
        self.description = f"Confidential-description-inhaler-{tag}"
        self.file_marker = f"FILEBYTES-{secrets.token_hex(8)}"
        self.password = f"Hunter-Passw0rd-{secrets.token_hex(6)}"
        self.wrong_password = f"Wrong-Passw0rd-{secrets.token_hex(6)}"
        self.forged_token = f"mvt_{secrets.token_urlsafe(32)}"
        self.seen: list[str] = []  # tokens, cookies and links handed out during the session

    def note(self, value: str | None) -> str:
        assert value, "expected a credential"
        self.seen.append(value)
        return value

    def all(self) -> dict[str, str]:
        fixed = {
            "family name": self.family,
            "given name": self.given,
            "birth date": self.birth_date,
            "identifier": self.identifier,
            "title": self.title,
            "description": self.description,
            "file bytes": self.file_marker,
            "password": self.password,
            "wrong password": self.wrong_password,
            "forged token": self.forged_token,
        }
        fixed.update({f"credential #{n}": value for n, value in enumerate(self.seen)})
        return fixed


def pdf_with(marker: str) -> bytes:
    return b"%PDF-1.7\n%" + marker.encode() + b"\n" + secrets.token_bytes(2048) + b"\n%%EOF\n"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rest_session(url: str, admin_token: str, s: Secrets, make_user: UserFactory) -> dict[str, Any]:
    """Staff set up a record; a patient and an attacker then use and abuse the API."""
    ids: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers=bearer(admin_token), timeout=60) as staff:
        patient = staff.post(
            "/api/v1/patients",
            json={
                "identifier": {"system": NHS_SYSTEM, "value": s.identifier},
                "family_name": s.family,
                "given_name": s.given,
                "birth_date": s.birth_date,
            },
        )
        assert patient.status_code == 201, patient.text
        ids["patient"] = patient.json()["id"]
        other = staff.post(
            "/api/v1/patients",
            json={
                "identifier": {"system": NHS_SYSTEM, "value": f"8{secrets.randbelow(10**9):09d}"},
                "family_name": f"Other{s.family}",
                "given_name": s.given,
                "birth_date": s.birth_date,
            },
        ).json()["id"]
        for name, owner in (("document", ids["patient"]), ("foreign", other)):
            uploaded = staff.post(
                "/api/v1/documents",
                params={
                    "patient_id": owner,
                    "document_type": "11502-2",
                    "filename": f"{s.title}.pdf",
                    "title": s.title,
                    "description": s.description,
                },
                content=pdf_with(s.file_marker),
                headers={"content-type": "application/pdf"},
            )
            assert uploaded.status_code == 201, uploaded.text
            ids[name] = uploaded.json()["id"]
        staff.get("/api/v1/patients", params={"identifier": s.identifier})
        staff.get("/api/v1/documents", params={"q": s.title})
        link = staff.post(f"/api/v1/documents/{ids['document']}/download-url", json={})
        assert link.status_code == 201, link.text
        url_ = link.json()["url"]
        ids["link"] = url_[url_.index("/api/v1/download/") :]
        s.note(ids["link"].rsplit("/", 1)[-1])
        # Errors a careless staff client makes: NUL bytes, an oversized body, a bad range.
        staff.post(
            "/api/v1/patients",
            json={
                "identifier": {"system": NHS_SYSTEM, "value": s.identifier},
                "family_name": f"{s.family}\x00",
                "given_name": s.given,
                "birth_date": s.birth_date,
            },
        )
        staff.get("/api/v1/documents", params={"q": f"{s.title}\x00"})
        staff.post(
            "/api/v1/patients",
            content=b'{"family_name":"' + s.family.encode() * 200_000 + b'"}',
            headers={"content-type": "application/json"},
        )
        staff.get(
            f"/api/v1/documents/{ids['document']}/content",
            headers={"Range": "bytes=" + "9" * 5000 + "-"},
        )

    user = make_user(Role.PATIENT, patient_id=ids["patient"])
    ids["patient_user"] = user
    with httpx.Client(base_url=url, timeout=60) as anonymous:
        # The attacker: wrong passwords, forged and garbage tokens, the signed link abused.
        for username in (user.username, f"nobody-{s.family}"):
            anonymous.post(
                "/api/v1/auth/token",
                data={"username": username, "password": s.wrong_password, "grant_type": "password"},
            )
        anonymous.get("/api/v1/documents", headers=bearer(s.forged_token))
        anonymous.get("/api/v1/documents", headers=bearer(f"eyJ{s.forged_token}.x.y"))
        anonymous.post("/api/v1/auth/refresh", json={"refresh_token": s.forged_token})
        anonymous.get(ids["link"] + "x")
        anonymous.get(ids["link"], headers={"Range": "bytes=" + "7" * 5000 + "-"})
        assert anonymous.get(ids["link"]).status_code == 200
        anonymous.get(f"/api/v1/documents/{uuid.uuid4()}", headers=bearer(s.forged_token))
        anonymous.post(
            "/api/v1/auth/refresh",
            content=b'{"refresh_token":"' + s.forged_token.encode() * 100_000 + b'"}',
            headers={"content-type": "application/json"},
        )

        # The patient: a real login, a refresh, then reads inside and outside their reach.
        tokens = anonymous.post(
            "/api/v1/auth/token",
            data={"username": user.username, "password": user.password, "grant_type": "password"},
        )
        assert tokens.status_code == 200, tokens.text
        access = s.note(tokens.json()["access_token"])
        refresh = s.note(tokens.json()["refresh_token"])
        renewed = anonymous.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
        assert renewed.status_code == 200
        access = s.note(renewed.json()["access_token"])
        s.note(renewed.json()["refresh_token"])
        anonymous.post("/api/v1/auth/refresh", json={"refresh_token": refresh})  # a replay
        mine = bearer(access)
        assert anonymous.get(f"/api/v1/documents/{ids['document']}", headers=mine).status_code in (
            200,
            401,  # the replay above ended the whole session: also fine for this test
        )
        anonymous.get(f"/api/v1/documents/{ids['foreign']}", headers=mine)
        anonymous.get(f"/api/v1/documents/{ids['foreign']}/content", headers=mine)
        anonymous.get(f"/api/v1/audit/events?patient_id={other}", headers=mine)
        anonymous.get(f"/api/v1/patients/{other}", headers=mine)
    return ids


def fhir_session(url: str, admin_token: str, s: Secrets, ids: dict[str, Any]) -> None:
    with httpx.Client(base_url=url, timeout=60) as fhir:
        staff = bearer(admin_token)
        fhir.get("/fhir/Patient", params={"name": s.family}, headers=staff)
        fhir.get(
            "/fhir/Patient", params={"identifier": f"{NHS_SYSTEM}|{s.identifier}"}, headers=staff
        )
        fhir.get("/fhir/Patient", params={"birthdate": s.birth_date}, headers=staff)
        fhir.get("/fhir/Patient", params={"name": " ".join([s.family] * 3000)}, headers=staff)
        fhir.get("/fhir/DocumentReference", params={"patient": ids["patient"]}, headers=staff)
        resource = fhir.get(f"/fhir/DocumentReference/{ids['document']}", headers=staff)
        assert resource.status_code == 200, resource.text
        binary_url = resource.json()["content"][0]["attachment"]["url"]
        binary = binary_url[binary_url.index("/fhir/") :]
        fhir.get(binary, headers={**staff, "Accept": "application/fhir+json"})
        fhir.get(binary, headers={**staff, "Range": "bytes=" + "5" * 5000 + "-"})
        fhir.post(
            "/fhir/Patient/_search",
            content=f"name={s.family}&birthdate={s.birth_date}".encode(),
            headers={**staff, "content-type": "application/x-www-form-urlencoded"},
        )
        fhir.get(f"/fhir/DocumentReference/{ids['foreign']}", headers=bearer(s.forged_token))
        fhir.get(f"/fhir/Patient/{uuid.uuid4()}", headers=staff)
        fhir.put(
            f"/fhir/DocumentReference/{ids['document']}",
            content=b'{"resourceType":"DocumentReference","description":"'
            + s.description.encode() * 100_000
            + b'"}',
            headers={**staff, "content-type": "application/fhir+json"},
        )


def portal_session(url: str, s: Secrets, ids: dict[str, Any], make_user: UserFactory) -> None:
    clinician = make_user(Role.CLINICIAN)
    patient = ids["patient_user"]
    for who, password in ((clinician, s.wrong_password), (patient, patient.password)):
        with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as browser:
            browser.get("/login")
            s.note(browser.cookies.get(LOGIN_CSRF_COOKIE))
            csrf = browser.cookies.get(LOGIN_CSRF_COOKIE) or ""
            browser.post(
                "/login", data={"username": who.username, "password": password, "csrf_token": csrf}
            )
            for name, value in browser.cookies.items():
                if name != LOGIN_CSRF_COOKIE:
                    s.note(value)
            browser.get("/documents")
            browser.get(f"/documents/{ids['document']}")
            browser.get(f"/documents/{ids['document']}/download")
            browser.get(f"/documents/{ids['foreign']}")
            browser.get(f"/documents/{ids['foreign']}/download")
            browser.get(f"/documents/{uuid.uuid4()}")
            browser.post("/documents", data={"q": s.title, "csrf_token": "forged"})
            browser.get("/patients", params={"q": s.family})


def delete_and_probe(url: str, admin_token: str, ids: dict[str, Any]) -> None:
    with httpx.Client(base_url=url, headers=bearer(admin_token), timeout=60) as staff:
        deleted = staff.delete(
            f"/api/v1/documents/{ids['document']}", params={"reason": "hostile-session test"}
        )
        assert deleted.status_code in (200, 204), deleted.text
        staff.get(f"/api/v1/documents/{ids['document']}/content")
    with httpx.Client(base_url=url, timeout=60) as anonymous:
        anonymous.get(ids["link"])  # the signed link after the delete


def test_a_hostile_session_leaves_no_secret_in_any_log_line(
    server: LiveServer,
    captured: Capture,
    api_token: str,
    make_user: UserFactory,
) -> None:
    s = Secrets()
    s.note(api_token)
    ids = rest_session(server.url, api_token, s, make_user)
    fhir_session(server.url, api_token, s, ids)
    portal_session(server.url, s, ids, make_user)
    delete_and_probe(server.url, api_token, ids)

    logged = server_side(captured.records)
    # The capture works: the session's requests are in it (redacted), errors included.
    assert logged.count("medvault.access") >= 60, logged[-2000:]
    assert "/api/v1/download/<signed>" in logged
    statuses = {
        int(str(record.args[2]))  # the access log's arguments: method, path, status, …
        for record in captured.records
        if record.name == "medvault.access" and isinstance(record.args, tuple)
    }
    # Honest use, refusals, redirects and errors were all part of the session.
    assert {200, 201, 303, 401, 404, 410, 413} <= statuses, sorted(statuses)
    print(f"\naccess statuses seen: {sorted(statuses)}")
    leaks = {label: value for label, value in s.all().items() if value in logged}
    assert not leaks, f"logged: {sorted(leaks)}"
    # Titles and names also must not appear in pieces (e.g. cut by a length limit).
    for value in (s.family, s.title, s.description, s.file_marker):
        assert value[:12] not in logged, value[:12]
