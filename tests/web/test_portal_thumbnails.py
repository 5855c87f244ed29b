"""Thumbnails in the portal's lists and the preview pane: the encrypted previews the
worker made, fetched through the audited preview route; a type icon where there is
no preview, and nothing of a document the caller may not read."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from medvault.runtime import Runtime
from tests.support.browser import PageFactory, screenshot
from tests.support.factories import dicom_bytes, upload_raw
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs
from tests.support.portal import post_form
from tests.web.portal_world import Practice
from tests.web.test_scenarios import inspect, ui_login


def _thumbnail(document_id: str) -> str:
    return f'src="/documents/{document_id}/preview?size=thumbnail"'


def _dicom_study(practice: Practice) -> str:
    """A DICOM file: stored and readable, but of a type without previews."""
    response = upload_raw(
        practice.service,
        practice.own,
        dicom_bytes(),
        filename="study.dcm",
        content_type="application/dicom",
        title="Echo study",
    )
    assert response.status_code == 201, response.text
    run_due_jobs(practice.runtime)
    return str(response.json()["id"])


def test_the_list_shows_thumbnails_of_readable_documents(practice: Practice) -> None:
    note = _dicom_study(practice)
    with practice.browser("clinician") as browser:
        listing = browser.get("/documents")
        assert listing.status_code == 200
        assert _thumbnail(practice.own_doc) in listing.text
        # No preview for a DICOM file: its type, not an <img> that would be refused.
        assert _thumbnail(note) not in listing.text
        row = re.search(rf'data-document-id="{note}".*?</tr>', listing.text, re.S)
        assert row is not None and "data-type-icon" in row.group(0) and "DICOM" in row.group(0)
        assert practice.foreign_doc not in listing.text

        image = browser.get(f"/documents/{practice.own_doc}/preview?size=thumbnail")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/webp"
        assert image.headers["cache-control"] == "private, no-store"
    # Each thumbnail shown is a read of the document's content, audited as one.
    reads = audit_events(practice.runtime, "document.preview.read", outcome="success")
    assert [(str(e.resource_id), e.details["size"]) for e in reads] == [
        (practice.own_doc, "thumbnail")
    ]


def test_a_patient_sees_thumbnails_of_their_own_documents(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        listing = browser.get("/documents")
        assert _thumbnail(practice.own_doc) in listing.text
        assert practice.foreign_doc not in listing.text
        foreign = browser.get(f"/documents/{practice.foreign_doc}/preview?size=thumbnail")
        assert foreign.status_code == 404
        assert not foreign.headers["content-type"].startswith("image/")
    # The refused attempt on another patient's record is audited too.
    refused = audit_events(practice.runtime, "access.denied")
    assert [(str(e.patient_id), str(e.resource_id)) for e in refused] == [
        (practice.foreign, practice.foreign_doc)
    ]


def test_an_admin_gets_type_icons_not_thumbnails(practice: Practice) -> None:
    # An admin reads metadata only: a picture of a page is content.
    with practice.browser("admin") as browser:
        listing = browser.get("/documents")
        assert practice.own_doc in listing.text and practice.foreign_doc in listing.text
        assert "data-thumbnail" not in listing.text
        assert listing.text.count("data-type-icon") >= 2


def test_the_patient_page_lists_thumbnails(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        page = browser.get(f"/patients/{practice.own}")
        assert page.status_code == 200
        assert _thumbnail(practice.own_doc) in page.text


def test_a_deleted_document_has_no_thumbnail(practice: Practice) -> None:
    deleted = practice.service.delete(
        f"/api/v1/documents/{practice.own_doc}", params={"reason": "duplicate"}
    )
    assert deleted.status_code == 200, deleted.text
    with practice.browser("clinician") as browser:
        # Filters are posted, as the portal keeps them out of URLs.
        listing = post_form(browser, "/documents", {"status": "deleted"})
        assert practice.own_doc in listing.text
        assert _thumbnail(practice.own_doc) not in listing.text


def test_thumbnails_and_the_preview_render_in_chromium(
    page: PageFactory, practice: Practice, runtime: Runtime
) -> None:
    _dicom_study(practice)
    user = practice.users["clinician"]
    desktop = page()
    ui_login(desktop, user.username, user.password)
    desktop.goto("/documents")
    own = desktop.locator(f'tr[data-document-id="{practice.own_doc}"]')
    thumbnail = own.locator("img[data-thumbnail]")
    expect(thumbnail).to_be_visible()
    # Decoded, not a broken-image box: the browser got a real WebP from the vault.
    desktop.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
    )
    assert thumbnail.evaluate("img => img.naturalWidth") <= 200
    expect(desktop.locator("tr", has_text="Echo study").locator("[data-type-icon]")).to_have_text(
        "DICOM"
    )
    inspect(desktop, "documents-thumbnails")

    # With script, a PDF's page shows pdf.js (tests/web/test_pdf_viewer.py); the
    # server-rendered first page is what a browser without script shows.
    plain = page(javascript=False)
    ui_login(plain, user.username, user.password)
    plain.goto(f"/documents/{practice.own_doc}")
    pane = plain.locator("img.preview-image")
    expect(pane).to_be_visible()
    plain.wait_for_function(
        "img => img.complete && img.naturalWidth > 200", arg=pane.element_handle()
    )
    # axe cannot run without script (tests/support/browser.py); the page with script is
    # audited in tests/web/test_pdf_viewer.py.
    screenshot(plain, "document-preview-pane")
