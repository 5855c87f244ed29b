"""What the portal shows about the malware scan and PDF active content.

Over HTTP on both backends, with this package's real clamd: uploads through the REST
API, scans by the worker's own handlers (``drain``), pages read as a clinician on the
patient's care team and as the patient. The content routes' refusals themselves are
pinned down in test_scanning_routes.py; here, that the pages agree with them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.processing.pdf_samples import real_pdf, script_on_open
from tests.processing.scanning_world import EICAR_PDF, drain, scanning_backend
from tests.support.backends import Backend
from tests.support.clamd import ClamdServer
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.portal import portal_login
from tests.support.users import UserFactory

FLAGGED = (
    "Our malware scanner flagged this file, so it cannot be opened. An administrator has "
    "been alerted."
)
CLEAN_COPY = "You can upload a clean copy."


@pytest.fixture
def scan_policy() -> str:
    return "blocking"


@pytest.fixture
def backend(backend: Backend, clamd: ClamdServer, scan_policy: str) -> Backend:
    return scanning_backend(backend, clamd, scan_policy)


@dataclass
class Readers:
    patient_id: str
    clinician: TestClient
    patient: TestClient


@pytest.fixture
def readers(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> Iterator[Readers]:
    """A patient, a clinician on their care team and the patient's own user, logged in."""
    patient_id = create_patient(client)
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=patient_id)
    patient = make_user(Role.PATIENT, patient_id=patient_id)
    with (
        _portal(app, clinician.username, clinician.password) as on_team,
        _portal(app, patient.username, patient.password) as own,
    ):
        yield Readers(patient_id, on_team, own)


@contextmanager
def _portal(app: FastAPI, username: str, password: str) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as browser:
        assert portal_login(browser, username, password).status_code == 303
        yield browser


def _upload(client: TestClient, patient_id: str, content: bytes) -> str:
    response = upload_raw(client, patient_id, content)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _page(browser: TestClient, url: str) -> str:
    response = browser.get(url)
    assert response.status_code == 200, response.text
    return html.unescape(response.text)


def _content_links(page: str, document_id: str) -> set[str]:
    """The download and preview links the page offers for ``document_id``."""
    return set(re.findall(rf'href="(/documents/{document_id}/(?:download|view)[^"]*)"', page))


def _badge(page: str, state: str) -> str:
    match = re.search(rf'<span class="tag \w+" data-scan-state="{state}">([^<]+)</span>', page)
    assert match, f"no {state} badge"
    return match.group(1)


def _row(page: str, document_id: str) -> str:
    match = re.search(rf'<tr data-document-id="{document_id}">(.*?)</tr>', page, re.S)
    assert match, "no row for the document"
    return match.group(1)


def test_an_infected_upload_is_quarantined_on_every_page(
    readers: Readers, client: TestClient, runtime: Runtime
) -> None:
    document_id = _upload(client, readers.patient_id, EICAR_PDF)
    drain(runtime)
    page = _page(readers.clinician, f"/documents/{document_id}")
    assert _badge(page, "infected") == "Quarantined"
    assert f"{FLAGGED} {CLEAN_COPY}" in page
    assert _content_links(page, document_id) == set()
    assert "Download and preview are unavailable: quarantined." in page
    # EICAR behind a PDF header does not parse; that is moot for content never served.
    assert "data-active-content" not in page
    listing = _row(_page(readers.clinician, "/documents"), document_id)
    assert _badge(listing, "infected") == "Quarantined"
    assert _content_links(listing, document_id) == set()

    # The patient may not add a version to their care team's document: no such offer.
    theirs = _page(readers.patient, f"/documents/{document_id}")
    assert FLAGGED in theirs and CLEAN_COPY not in theirs
    assert _content_links(theirs, document_id) == set()

    # Typed by hand, the content route answers a page, not JSON, leading back.
    refused = readers.patient.get(f"/documents/{document_id}/download")
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert f'<a href="/documents/{document_id}">Back to the document</a>' in refused.text
    assert "malware scanner flagged this version" in refused.text

    # A clean copy as version 2: offered again, while version 1 stays quarantined.
    added = client.post(
        f"/api/v1/documents/{document_id}/versions",
        content=real_pdf(),
        headers={"content-type": "application/pdf"},
    )
    assert added.status_code == 201, added.text
    drain(runtime)
    page = _page(readers.clinician, f"/documents/{document_id}")
    assert _badge(page, "clean") == "Clean"
    assert _badge(page, "infected") == "Quarantined"  # version 1, in the history
    assert FLAGGED not in page
    assert _content_links(page, document_id) == {
        f"/documents/{document_id}/download",
        f"/documents/{document_id}/view",
        f"/documents/{document_id}/download?version=2",
    }


def test_a_destroyed_version_says_so_and_answers_gone(
    readers: Readers, client: TestClient, runtime: Runtime
) -> None:
    document_id = _upload(client, readers.patient_id, EICAR_PDF)
    drain(runtime)
    destroyed = client.post(
        f"/api/v1/quarantine/{document_id}/versions/1/destroy",
        params={"reason": "Confirmed malware"},
    )
    assert destroyed.status_code == 200, destroyed.text
    page = _page(readers.clinician, f"/documents/{document_id}")
    assert _badge(page, "infected") == "Removed"
    assert "An administrator removed this file's content after our malware scanner" in page
    assert _content_links(page, document_id) == set()
    gone = readers.clinician.get(f"/documents/{document_id}/download")
    assert gone.status_code == 410
    assert f'<a href="/documents/{document_id}">Back to the document</a>' in gone.text


def test_pending_under_the_blocking_policy_is_announced_then_offered(
    readers: Readers, client: TestClient, runtime: Runtime
) -> None:
    document_id = _upload(client, readers.patient_id, real_pdf())
    page = _page(readers.patient, f"/documents/{document_id}")
    assert _badge(page, "pending") == "Scanning…"
    assert "It will be available shortly" in page
    assert _content_links(page, document_id) == set()
    listing = _row(_page(readers.patient, "/documents"), document_id)
    assert _badge(listing, "pending") == "Scanning…"
    assert _content_links(listing, document_id) == set()

    drain(runtime)
    page = _page(readers.patient, f"/documents/{document_id}")
    assert _badge(page, "clean") == "Clean"
    assert "data-scan-notice" not in page
    assert f"/documents/{document_id}/download" in _content_links(page, document_id)
    listing = _row(_page(readers.patient, "/documents"), document_id)
    assert f"/documents/{document_id}/download" in _content_links(listing, document_id)


@pytest.mark.parametrize("scan_policy", ["async"])
def test_pending_under_the_async_policy_is_offered_meanwhile(
    readers: Readers, client: TestClient
) -> None:
    document_id = _upload(client, readers.patient_id, real_pdf())
    page = _page(readers.patient, f"/documents/{document_id}")
    assert _badge(page, "pending") == "Scanning…"
    assert "You can open it meanwhile." in page
    assert f"/documents/{document_id}/download" in _content_links(page, document_id)
    # And the route agrees: the page offered nothing it would refuse.
    served = readers.patient.get(f"/documents/{document_id}/download")
    assert served.status_code == 200


def test_active_content_in_a_pdf_is_spelled_out(
    readers: Readers, client: TestClient, runtime: Runtime
) -> None:
    scripted = _upload(client, readers.patient_id, real_pdf(script_on_open))
    plain = _upload(client, readers.patient_id, real_pdf())
    unreadable = _upload(client, readers.patient_id, pdf_bytes())
    # Pending, the content is not offered (blocking policy), and neither are notes on it.
    assert "data-active-content" not in _page(readers.clinician, f"/documents/{scripted}")
    drain(runtime)
    page = _page(readers.clinician, f"/documents/{scripted}")
    assert "<strong>This PDF holds active content.</strong>" in page
    assert "This PDF contains scripts (JavaScript)." in page
    assert "This PDF runs actions by itself, for example when it is opened." in page
    assert "data-active-content" not in _page(readers.clinician, f"/documents/{plain}")
    odd = _page(readers.clinician, f"/documents/{unreadable}")
    assert "could not be checked for active content: it is not a well-formed PDF" in odd
    assert "This PDF holds active content." not in odd
    listing = _page(readers.clinician, "/documents")
    assert "data-active-content" in _row(listing, scripted)
    assert "data-active-content" not in _row(listing, plain)
    assert "data-active-content" not in _row(listing, unreadable)
