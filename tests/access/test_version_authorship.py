"""Who may change an existing document: author x document origin x face, on both backends.

Issue 9, defect 1: a patient uploaded a file onto a clinician's letter, and it became the
current version that clinicians read. One rule (``access.authorship``) now decides, for
every face that changes an existing document, and this matrix pins it down:

* **authors**: the patient (portal/REST user), the patient's app (an API token bound to
  the patient by ``patient/`` scopes), a clinician of the care team, a service account,
  and the patient of another record;
* **origins**: a document uploaded by the patient, by the patient's app, by the
  clinician, by the service account;
* **faces**: REST ``POST /documents/{id}/versions``, REST upload with
  ``on_duplicate=new_version``, FHIR ``POST Binary`` into ``DocumentReference/{id}``, FHIR
  ``PUT DocumentReference``, FHIR transaction Bundles, and the portal (the form's offer,
  and its POST).

Each cell asserts the exact status; after a refusal, that the current version (number,
SHA-256, metadata) did not change and that the refusal is in the audit log as
``access.denied``; after a success, that the change happened. Each cell gets a fresh
document, so cells never disturb each other.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from medvault.audit.models import AuditEvent
from medvault.auth.principal import Role
from medvault.auth.service import create_api_token
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.portal import csrf_token, portal_login
from tests.support.users import UserFactory, bearer, login

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)

AUTHORS = ("patient", "patient_app", "clinician", "service", "other_patient")
ORIGINS = ("patient", "patient_app", "clinician", "service")
PATIENT_SIDE = frozenset({"patient", "patient_app"})
PORTAL_AUTHORS = ("patient", "clinician", "other_patient")
STAFF_AUTHORED = "urn:medvault:problem:staff-authored-document"


@dataclass
class World:
    runtime: Runtime
    service: TestClient
    own: str  # patient A: the patient's record, on the clinician's care team
    clients: dict[str, TestClient]  # REST and FHIR, one per author
    browsers: dict[str, TestClient]  # portal sessions of the authors who are users

    def new_document(self, origin: str) -> tuple[str, bytes]:
        """A document of patient A, uploaded by ``origin``: its id and its bytes."""
        content = pdf_bytes()
        uploaded = upload_raw(self.clients[origin], self.own, content)
        assert uploaded.status_code == 201, (origin, uploaded.text)
        return str(uploaded.json()["id"]), content

    def state(self, document: str) -> tuple[int, str, str | None]:
        """The current version and metadata, as the service account reads them."""
        found = self.service.get(f"/api/v1/documents/{document}").json()
        return found["version"], found["sha256"], found["description"]

    def last_event_id(self) -> int:
        with self.runtime.clinical.session() as session:
            return session.scalar(select(func.max(AuditEvent.id))) or 0

    def denials_since(self, mark: int) -> list[AuditEvent]:
        with self.runtime.clinical.session() as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.id > mark, AuditEvent.action == "access.denied")
                    .order_by(AuditEvent.id)
                )
            )


@pytest.fixture
def world(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> Iterator[World]:
    own = create_patient(client)
    other = create_patient(client)
    users = {
        "patient": make_user(Role.PATIENT, patient_id=own),
        "clinician": make_user(Role.CLINICIAN),
        "other_patient": make_user(Role.PATIENT, patient_id=other),
    }
    put_on_care_team(runtime, clinician_id=users["clinician"].id, patient_id=own)
    with runtime.auth.session() as session:
        app_token = create_api_token(
            session=session,
            name="patient app",
            scopes=("patient/*.*",),
            user_id=users["patient"].id,
        ).token
        session.commit()
    with ExitStack() as stack:
        clients = {"service": client}
        for author, user in users.items():
            rest = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            token = login(rest, user.username, user.password).json()["access_token"]
            rest.headers.update(bearer(token))
            clients[author] = rest
        app_client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
        app_client.headers.update(bearer(app_token))
        clients["patient_app"] = app_client
        browsers = {}
        for author in PORTAL_AUTHORS:
            browser = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            user = users[author]
            assert portal_login(browser, user.username, user.password).status_code == 303
            browsers[author] = browser
        yield World(runtime, client, own, clients, browsers)


# -- the faces ---------------------------------------------------------------------------

Face = Callable[[World, str, str, bytes], httpx.Response]


def rest_versions(world: World, author: str, document: str, content: bytes) -> httpx.Response:
    response: httpx.Response = world.clients[author].post(
        f"/api/v1/documents/{document}/versions",
        content=pdf_bytes(),
        headers={"content-type": "application/pdf"},
    )
    return response


def rest_duplicate(world: World, author: str, document: str, content: bytes) -> httpx.Response:
    """The same bytes again, asking for them to become a new version of the existing one."""
    return upload_raw(world.clients[author], world.own, content, on_duplicate="new_version")


def fhir_binary(world: World, author: str, document: str, content: bytes) -> httpx.Response:
    response: httpx.Response = world.clients[author].post(
        "/fhir/Binary",
        content=pdf_bytes(),
        headers={
            "content-type": "application/pdf",
            "X-Security-Context": f"DocumentReference/{document}",
        },
    )
    return response


def fhir_put(world: World, author: str, document: str, content: bytes) -> httpx.Response:
    resource = world.service.get(f"/fhir/DocumentReference/{document}").json()
    resource["description"] = f"Changed by {author}"
    response: httpx.Response = world.clients[author].put(
        f"/fhir/DocumentReference/{document}",
        json=resource,
        headers={"If-Match": f'W/"{resource["meta"]["versionId"]}"'},
    )
    return response


def fhir_transaction(world: World, author: str, document: str, content: bytes) -> httpx.Response:
    """A Bundle that tries both ways a transaction could touch an existing document."""
    resource = world.service.get(f"/fhir/DocumentReference/{document}").json()
    resource["description"] = f"Changed by {author}"
    binary = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "securityContext": {"reference": f"DocumentReference/{document}"},
        "data": base64.b64encode(pdf_bytes()).decode(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": binary,
                "request": {"method": "POST", "url": "Binary"},
            },
            {
                "resource": resource,
                "request": {"method": "PUT", "url": f"DocumentReference/{document}"},
            },
        ],
    }
    response: httpx.Response = world.clients[author].post(
        "/fhir", json=bundle, headers={"content-type": "application/fhir+json"}
    )
    return response


def portal_post(world: World, author: str, document: str, content: bytes) -> httpx.Response:
    browser = world.browsers[author]
    response: httpx.Response = browser.post(
        f"/documents/{document}/versions",
        files={"file": ("new.pdf", pdf_bytes(), "application/pdf")},
        headers={"X-CSRF-Token": csrf_token(browser), "Accept": "application/json"},
    )
    return response


FACES: dict[str, Face] = {
    "rest_versions": rest_versions,
    "rest_duplicate": rest_duplicate,
    "fhir_binary": fhir_binary,
    "fhir_put": fhir_put,
    "fhir_transaction": fhir_transaction,
    "portal_post": portal_post,
}


def problem_type(response: Any) -> str | None:
    """The stable problem type, from problem+json or a FHIR OperationOutcome."""
    body = response.json()
    if body.get("resourceType") == "OperationOutcome":
        coding = body["issue"][0]["details"]["coding"][0]
        return f"{coding['system']}:{coding['code']}"
    found = body.get("type")
    return found if isinstance(found, str) else None


def expected(author: str, origin: str, face: str) -> int:
    """The one rule, written out: what each cell must answer."""
    if face == "fhir_transaction":
        # A transaction only creates: it has no way to change an existing document, for
        # anybody. Should it ever gain one, this cell fails until the rule covers it.
        return 422
    if author == "other_patient":
        # Someone else's record: not found (or, naming it as the patient, unknown).
        return 422 if face == "rest_duplicate" else 404
    if author in PATIENT_SIDE and origin not in PATIENT_SIDE:
        return 403  # staff-authored: never the patient's to change
    return 200 if face == "fhir_put" else 201


def _authors_for(face: str) -> tuple[str, ...]:
    return PORTAL_AUTHORS if face.startswith("portal") else AUTHORS


@pytest.mark.parametrize("face", list(FACES))
def test_who_may_change_a_document(world: World, face: str) -> None:
    problems: list[str] = []
    for author in _authors_for(face):
        for origin in ORIGINS:
            cell = f"{author} on {origin}-authored via {face}"
            document, content = world.new_document(origin)
            before = world.state(document)
            mark = world.last_event_id()
            response = FACES[face](world, author, document, content)
            want = expected(author, origin, face)
            after = world.state(document)
            if response.status_code != want:
                problems.append(f"{cell}: {response.status_code}, expected {want}")
                continue
            if want >= 400:
                if after != before:
                    problems.append(f"{cell}: refused, but the document changed")
                if want == 403 and problem_type(response) != STAFF_AUTHORED:
                    problems.append(f"{cell}: 403 without the staff-authored type")
                if want != 422 or face == "rest_duplicate":
                    denials = world.denials_since(mark)
                    if not any(
                        str(event.patient_id) == world.own
                        and event.resource_id in (document, world.own)
                        for event in denials
                    ):
                        problems.append(f"{cell}: refused without an access.denied event")
            elif face == "fhir_put":
                if after[:2] != before[:2] or after[2] != f"Changed by {author}":
                    problems.append(f"{cell}: accepted, but the description did not change")
            elif after[0] != before[0] + 1:
                problems.append(f"{cell}: accepted, but no new current version")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("author", PORTAL_AUTHORS)
def test_the_portal_offers_a_new_version_only_where_it_would_be_accepted(
    world: World, author: str
) -> None:
    browser = world.browsers[author]
    for origin in ORIGINS:
        document, _ = world.new_document(origin)
        page = browser.get(f"/documents/{document}")
        want = expected(author, origin, "portal_post")
        if want == 404:
            assert page.status_code == 404, origin
            continue
        assert page.status_code == 200, origin
        offered = "Upload a new version" in page.text
        assert offered == (want == 201), (author, origin)
        assert (f'data-endpoint="/documents/{document}/versions"' in page.text) == offered


def test_the_document_page_shows_each_version_with_its_own_uploader_and_time(
    world: World,
) -> None:
    """The creator with the creation time; a later uploader with their version's time.

    The page used to show the document's creation time next to the newest uploader.
    """
    document, _ = world.new_document("patient")
    added = rest_versions(world, "clinician", document, b"")
    assert added.status_code == 201, added.text
    versions = world.service.get(f"/api/v1/documents/{document}/versions").json()["items"]
    second = max(versions, key=lambda v: v["version"])
    created_at = world.service.get(f"/api/v1/documents/{document}").json()["created_at"]
    page = world.browsers["patient"].get(f"/documents/{document}").text
    created = _definition(page, "Created")
    current = _definition(page, "Version")
    assert _times(created) == [datetime.fromisoformat(created_at)]
    assert _times(current) == [datetime.fromisoformat(second["created_at"])]
    assert "by patient-" in created and "clinician-" not in created
    assert "by clinician-" in current and "patient-" not in current


def _definition(page: str, term: str) -> str:
    """The <dd> that follows ``<dt>term</dt>`` on the details card."""
    match = re.search(rf"<dt>{term}</dt><dd>(.*?)</dd>", page, re.S)
    assert match, f"no {term} on the page"
    return match.group(1)


def _times(html: str) -> list[datetime]:
    return [datetime.fromisoformat(v) for v in re.findall(r'<time datetime="([^"]+)"', html)]
