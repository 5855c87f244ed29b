"""In Chromium: the malware scan's badges, the quarantine notice and PDF active content.

A real clamd scans the practice's uploads (started here: the ``clamd`` fixture of
tests/processing is not visible from this package). Every page is audited with axe,
checked at 200% zoom and screenshotted, as in test_scenarios.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from medvault.runtime import Runtime
from tests.processing.pdf_samples import real_pdf, script_on_open
from tests.processing.scanning_world import EICAR_PDF, drain, scanning_backend
from tests.support.backends import Backend
from tests.support.browser import PageFactory
from tests.support.clamd import ClamdServer, clamd_binary, running_clamd
from tests.support.factories import upload_raw
from tests.support.services import unavailable
from tests.web.portal_world import Practice
from tests.web.test_scenarios import inspect, ui_login


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    if clamd_binary() is None:
        unavailable("clamd is not installed (apt-get install clamav-daemon)")
    with running_clamd(tmp_path_factory.mktemp("clamd")) as server:
        yield server


@pytest.fixture
def backend(backend: Backend, clamd: ClamdServer) -> Backend:
    return scanning_backend(backend, clamd, "blocking")


def _upload(practice: Practice, content: bytes, title: str) -> str:
    response = upload_raw(practice.service, practice.own, content, title=title)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_scan_states_are_shown_and_explained(
    page: PageFactory, practice: Practice, runtime: Runtime
) -> None:
    infected = _upload(practice, EICAR_PDF, "Suspicious referral")
    scripted = _upload(practice, real_pdf(script_on_open), "Form with a script")
    drain(runtime)
    arriving = _upload(practice, real_pdf(), "Just arrived")  # its scan has not run

    user = practice.users["clinician"]
    desktop, phone = page(), page("phone")
    ui_login(desktop, user.username, user.password)
    ui_login(phone, user.username, user.password)
    rows = desktop.locator("tr[data-document-id]")
    expect(rows.filter(has_text="Suspicious referral")).to_contain_text("Quarantined")
    expect(rows.filter(has_text="Just arrived")).to_contain_text("Scanning…")
    expect(rows.filter(has_text="Form with a script")).to_contain_text("Clean")
    expect(rows.filter(has_text="Form with a script")).to_contain_text("active content")
    expect(
        rows.filter(has_text="Suspicious referral").get_by_role("link", name="Download")
    ).to_have_count(0)
    inspect(desktop, "documents-scan-states", phone)

    desktop.get_by_role("link", name="Suspicious referral", exact=True).click()
    expect(
        desktop.get_by_text("Our malware scanner flagged this file, so it cannot be opened.")
    ).to_be_visible()
    expect(desktop.get_by_role("link", name="Download")).to_have_count(0)
    expect(desktop.get_by_role("link", name="Preview")).to_have_count(0)
    inspect(desktop, "document-quarantined", phone)

    desktop.goto(f"/documents/{scripted}")
    expect(desktop.get_by_text("This PDF contains scripts (JavaScript).")).to_be_visible()
    expect(desktop.get_by_role("link", name="Download", exact=True)).to_be_visible()
    inspect(desktop, "document-active-content")

    desktop.goto(f"/documents/{arriving}")
    expect(desktop.get_by_text("It will be available shortly", exact=False)).to_be_visible()
    expect(desktop.get_by_role("link", name="Download", exact=True)).to_have_count(0)
    inspect(desktop, "document-scanning")

    # Typed by hand, the refused download is a page that leads back.
    desktop.goto(f"/documents/{infected}/download")
    expect(desktop.get_by_role("heading", name="quarantined", exact=False)).to_be_visible()
    desktop.get_by_role("link", name="Back to the document").click()
    expect(desktop.get_by_role("heading", name="Suspicious referral")).to_be_visible()
