"""The document page shows the PDF itself (issue 14, item 5): pdf.js, vendored, in a
frame sandboxed without allow-same-origin, fed by the page through the audited /view
route, under the portal's strict CSP (no console error may appear, in either frame).
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from playwright.sync_api import expect
from sqlalchemy import select

from medvault.audit.models import AuditEvent
from medvault.documents.reading import CONTENT_READ
from medvault.web import VIEWER_CSP
from tests.support.browser import (
    PageFactory,
    axe_violations,
    check_accessibility,
    console_errors,
)
from tests.support.factories import text_pdf_bytes, upload_raw
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login


def _reads(practice: Practice, document_id: str) -> int:
    with practice.runtime.clinical.session() as session:
        return len(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == CONTENT_READ, AuditEvent.resource_id == document_id
                )
            ).all()
        )


def test_the_pdf_is_shown_in_a_sandboxed_viewer(page: PageFactory, practice: Practice) -> None:
    desktop = page()
    patient = practice.users["patient"]
    ui_login(desktop, patient.username, patient.password)
    before = _reads(practice, practice.own_doc)
    desktop.goto(f"/documents/{practice.own_doc}")
    viewer = desktop.frame_locator("iframe.pdf-frame")
    expect(viewer.locator("body")).to_have_attribute("data-state", "ready", timeout=20_000)
    expect(viewer.locator("[data-count]")).to_have_text("1")
    expect(viewer.locator(".page canvas")).to_have_count(1)
    # The words are there as text (selectable, found by a screen reader), not just pixels.
    expect(viewer.locator(".textLayer")).to_contain_text("Full blood count")
    # The server-rendered picture steps aside when the viewer shows.
    expect(desktop.locator("[data-preview-fallback]")).to_be_hidden()
    assert _reads(practice, practice.own_doc) == before + 1

    # Zoom and fit width work, and say what they did.
    shown = viewer.locator("[data-zoom]")
    fitted = shown.inner_text()
    viewer.get_by_role("button", name="Zoom in").click()
    expect(shown).not_to_have_text(fitted)
    viewer.get_by_role("button", name="Fit width").click()
    expect(shown).to_have_text(fitted)

    # The frame is an opaque origin: no cookies, no way into the portal's page.
    frame = desktop.frame_locator("iframe.pdf-frame").owner
    assert frame.get_attribute("sandbox") == "allow-scripts"
    inner = next(f for f in desktop.frames if f.url.endswith("/static/pdf-viewer.html"))
    assert inner.evaluate("() => self.origin") == "null"
    reach = "() => { try { return String(parent.document.title) } catch (e) { return e.name } }"
    assert inner.evaluate(reach) == "SecurityError"
    cookie = "() => { try { return document.cookie } catch (e) { return e.name } }"
    assert inner.evaluate(cookie) == "SecurityError"
    assert console_errors(desktop) == []
    check_accessibility(desktop)
    # The frame's own page (toolbar, page regions) is audited in the frame itself.
    in_frame = axe_violations(inner)
    assert [v for v in in_frame if v.impact in ("serious", "critical")] == [], in_frame


def test_without_script_the_first_page_picture_stays(page: PageFactory, practice: Practice) -> None:
    plain = page(javascript=False)
    clinician = practice.users["clinician"]
    ui_login(plain, clinician.username, clinician.password)
    plain.goto(f"/documents/{practice.own_doc}")
    expect(plain.locator("[data-preview-fallback]")).to_be_visible()
    expect(plain.locator("[data-pdf-viewer]")).to_be_hidden()


def test_a_large_pdf_waits_for_a_click(page: PageFactory, practice: Practice) -> None:
    big = upload_raw(
        practice.service,
        practice.own,
        text_pdf_bytes("Large scan") + b"%" + b"0" * 26_000_000 + b"\n",
        title="Large scan",
    ).json()["id"]
    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    before = _reads(practice, big)
    desktop.goto(f"/documents/{big}")
    show = desktop.get_by_role("button", name="Show the document here (26.0 MB)")
    expect(show).to_be_visible()
    assert _reads(practice, big) == before  # nothing read until asked
    show.click()
    viewer = desktop.frame_locator("iframe.pdf-frame")
    expect(viewer.locator("body")).to_have_attribute("data-state", "ready", timeout=30_000)
    assert _reads(practice, big) == before + 1


def test_the_viewer_document_is_sandboxed_by_its_own_policy(practice: Practice) -> None:
    with TestClient(practice.app) as c:
        frame = c.get("/static/pdf-viewer.html")
        module = c.get("/static/pdfjs/pdf.min.mjs")
        portal = c.get("/static/portal.js")
    assert frame.headers["content-security-policy"] == VIEWER_CSP
    assert "sandbox allow-scripts" in VIEWER_CSP and "allow-same-origin" not in VIEWER_CSP
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    # Fetched in CORS mode by the opaque-origin frame; the portal's own files are not.
    assert module.headers["access-control-allow-origin"] == "*"
    assert module.headers["content-type"].startswith("text/javascript")
    assert "access-control-allow-origin" not in portal.headers
