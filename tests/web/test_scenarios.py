"""End-to-end scenarios in a real Chromium: clinician, patient, auditor, admin, CSRF.

Every page visited is audited with axe-core (no serious or critical violations),
checked at 200% zoom (no horizontal scrolling) and screenshotted at desktop and phone
width under artifacts/screenshots/.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from medvault.audit.sealer import seal_pending
from medvault.runtime import Runtime
from medvault.web.pages import resumable
from tests.processing.scanning_world import drain
from tests.support.browser import (
    PageFactory,
    check_accessibility,
    console_errors,
    screenshot,
    zoom_200,
)
from tests.support.factories import pdf_bytes
from tests.support.inspect import stored_state
from tests.web.portal_world import Practice


def ui_login(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def inspect(page: Page, name: str, phone: Page | None = None) -> None:
    """Accessibility, 200% zoom and screenshots of the page as it is now."""
    check_accessibility(page)
    screenshot(page, name)
    zoom_200(page)
    if phone is not None:
        phone.goto(page.url)
        check_accessibility(phone)
        screenshot(phone, name)


def test_clinician_creates_uploads_versions_and_deletes(
    page: PageFactory, practice: Practice, tmp_path: Path
) -> None:
    user = practice.users["clinician"]
    desktop, phone = page(), page("phone")
    ui_login(desktop, user.username, user.password)
    ui_login(phone, user.username, user.password)
    expect(desktop).to_have_url(re.compile(r"/documents$"))
    inspect(desktop, "documents", phone)

    # Create a document from the form, check the preview, confirm.
    desktop.get_by_role("link", name="Create document").click()
    desktop.get_by_label("Patient").select_option(practice.own)
    desktop.get_by_label("Document type").select_option("11488-4")
    desktop.get_by_label("Title").fill("Cardiology follow-up")
    desktop.get_by_label("Diagnosis", exact=True).fill("Stable angina")
    desktop.locator("#medications-0-name").fill("Bisoprolol")
    desktop.locator("#medications-0-dose").fill("2.5 mg")
    desktop.locator("#medications-0-route").fill("oral")
    desktop.locator("#medications-0-frequency").fill("once daily")
    desktop.get_by_label("Notes").fill("Review in three months.")
    inspect(desktop, "compose", phone)
    with desktop.expect_response(re.compile(r"/compose/pdf$")) as preview_pdf:
        desktop.get_by_role("button", name="Preview PDF").click()
    # The frame holds Chromium's PDF viewer, so the response body is not readable here;
    # the server states the SHA-256 of what it rendered, and the download must match it.
    assert preview_pdf.value.headers["content-type"] == "application/pdf"
    expect(desktop.get_by_role("heading", name="Check the document")).to_be_visible()
    previewed_sha = desktop.locator("#confirm-form input[name=preview_sha256]").input_value()
    expect(desktop.get_by_text(previewed_sha[:16])).to_be_visible()
    check_accessibility(desktop)
    screenshot(desktop, "compose-preview")
    zoom_200(desktop)
    desktop.get_by_role("button", name="Confirm & upload").click()
    expect(desktop.get_by_role("heading", name="Cardiology follow-up")).to_be_visible()
    document_id = re.search(r"/documents/([0-9a-f-]{36})", desktop.url)
    assert document_id
    # The page shows the letter itself in the PDF viewer (tests/web/test_pdf_viewer.py).
    viewer = desktop.frame_locator("iframe.pdf-frame").locator("body")
    expect(viewer).to_have_attribute("data-state", "ready", timeout=20_000)
    inspect(desktop, "document", phone)

    # Download it and compare with the bytes the API returns (and the preview).
    with desktop.expect_download() as download:
        desktop.get_by_role("link", name="Download", exact=True).click()
    downloaded = Path(download.value.path()).read_bytes()
    api_bytes = practice.service.get(f"/api/v1/documents/{document_id.group(1)}/content")
    assert downloaded == api_bytes.content
    assert hashlib.sha256(downloaded).hexdigest() == previewed_sha

    # It is in the list.
    desktop.get_by_role("link", name="Documents", exact=True).click()
    expect(desktop.get_by_role("link", name="Cardiology follow-up", exact=True)).to_be_visible()

    # Upload two files with progress, then a rejected one with the server's message.
    desktop.get_by_role("link", name="Upload", exact=True).click()
    desktop.get_by_label("Patient").select_option(practice.own)
    inspect(desktop, "upload", phone)
    first, second = tmp_path / "ecg-2026.pdf", tmp_path / "echo-report.pdf"
    first.write_bytes(pdf_bytes(2_000_000))
    second.write_bytes(pdf_bytes(1_000_000))
    desktop.locator("#files").set_input_files([first, second])
    desktop.get_by_role("button", name="Upload 2 files").click()
    done = desktop.locator(".upload-item.done")
    expect(done).to_have_count(2, timeout=30_000)
    for index in range(2):
        assert done.nth(index).locator("progress").get_attribute("value") == "100"
    expect(desktop.get_by_role("link", name="Open ecg-2026")).to_be_visible()
    # The same bytes again: explained, with a link to the document that has them.
    desktop.locator("#files").set_input_files(first)
    desktop.get_by_role("button", name="Upload 1 file").click()
    duplicate = desktop.locator(".upload-item.failed").last
    expect(duplicate).to_contain_text("This file is already stored for this patient.")
    expect(duplicate.get_by_role("link", name="Open the existing document")).to_be_visible()
    rejected = tmp_path / "notes.txt"
    rejected.write_text("a plain text file, not a clinical document format\n")
    desktop.locator("#files").set_input_files(rejected)
    desktop.get_by_role("button", name="Upload 1 file").click()
    failed = desktop.locator(".upload-item.failed .upload-status").last
    expect(failed).to_contain_text("unrecognised format; accepted types are")
    expect(failed).not_to_contain_text("urn:")
    screenshot(desktop, "upload-progress")

    # A new version, and the history shows both.
    desktop.goto(f"/documents/{document_id.group(1)}")
    new_version = tmp_path / "follow-up-v2.pdf"
    new_version.write_bytes(pdf_bytes(50_000))
    with desktop.expect_navigation(timeout=30_000):
        desktop.locator("#version-file").set_input_files(new_version)
    history = desktop.locator("table.versions tbody tr")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("follow-up-v2.pdf")

    # Delete it (confirm dialog, with a reason) and see it gone.
    desktop.get_by_role("link", name="Delete…").click()
    dialog = desktop.get_by_role("dialog")
    expect(dialog).to_be_visible()
    screenshot(desktop, "delete-dialog")
    dialog.get_by_label("Why is it being deleted?").fill("Filed against the wrong visit")
    dialog.get_by_role("button", name="Delete document").click()
    expect(desktop.get_by_text("The document was deleted.")).to_be_visible()
    desktop.get_by_role("link", name="Documents", exact=True).click()
    expect(desktop.get_by_role("link", name="Cardiology follow-up", exact=True)).to_have_count(0)
    expect(desktop.get_by_role("link", name="ecg-2026", exact=True)).to_be_visible()
    # No script error and no CSP refusal; the failed requests are the refused uploads.
    unexpected = [e for e in console_errors(desktop) if not re.search(r"status of (409|415)", e)]
    assert unexpected == []


def test_patient_sees_only_their_own_documents(page: PageFactory, practice: Practice) -> None:
    user = practice.users["patient"]
    desktop, phone = page(), page("phone")
    ui_login(desktop, user.username, user.password)
    ui_login(phone, user.username, user.password)
    expect(desktop.get_by_role("heading", name="My documents")).to_be_visible()
    expect(desktop.get_by_role("link", name="Own lab report", exact=True)).to_be_visible()
    expect(desktop.get_by_text("Foreign scan")).to_have_count(0)
    expect(desktop.get_by_role("link", name="Patients")).to_have_count(0)
    inspect(desktop, "patient-documents", phone)

    desktop.goto(f"/documents/{practice.foreign_doc}")
    foreign = desktop.content()
    expect(desktop.get_by_role("heading", name="Not found")).to_be_visible()
    desktop.goto(f"/documents/{uuid.uuid4()}")
    assert desktop.content() == foreign
    inspect(desktop, "not-found")


def test_auditor_sees_the_actions_and_verifies(
    page: PageFactory, practice: Practice, runtime: Runtime
) -> None:
    with practice.browser("clinician") as clinician:
        clinician.get(f"/documents/{practice.own_doc}")
        clinician.get(f"/documents/{practice.own_doc}/download")
    seal_pending(runtime=runtime)
    user = practice.users["auditor"]
    desktop, phone = page(), page("phone")
    ui_login(desktop, user.username, user.password)
    ui_login(phone, user.username, user.password)
    expect(desktop.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(desktop.get_by_role("cell", name="document.content.read").first).to_be_visible()
    expect(desktop.get_by_text("Events sealed")).to_be_visible()
    inspect(desktop, "audit", phone)
    desktop.get_by_label("Action").fill("document.read")
    desktop.get_by_role("button", name="Filter").click()
    expect(desktop.get_by_role("cell", name="document.content.read")).to_have_count(0)
    expect(desktop.get_by_role("cell", name="document.read").first).to_be_visible()
    desktop.get_by_role("button", name="Verify now").click()
    expect(desktop.get_by_role("heading", name="Waiting to start…")).to_be_visible()
    # The embedded worker is off in tests: run the queued jobs as it would; the page,
    # refreshing itself every 2 s without any script, then shows the result.
    assert drain(runtime) >= 1
    expect(desktop.get_by_text("The audit log verified.")).to_be_visible(timeout=10_000)
    inspect(desktop, "audit-verify")


def test_admin_manages_users_care_teams_and_patients(page: PageFactory, practice: Practice) -> None:
    user = practice.users["admin"]
    desktop, phone = page(), page("phone")
    ui_login(desktop, user.username, user.password)
    ui_login(phone, user.username, user.password)
    desktop.get_by_role("link", name="Users").click()
    inspect(desktop, "admin-users", phone)
    desktop.get_by_label("Username").fill("dr.new-colleague")
    desktop.get_by_label("Email").fill("new.colleague@hospital.example")
    desktop.get_by_label("Initial password").fill("a-long-initial-password")
    desktop.get_by_label("Role").select_option("clinician")
    desktop.get_by_role("button", name="Add user").click()
    expect(desktop.get_by_text("User dr.new-colleague was created.")).to_be_visible()

    desktop.get_by_role("link", name="Care teams").click()
    desktop.get_by_label("Clinician", exact=True).select_option(label="dr.new-colleague")
    desktop.get_by_label("Patient", exact=True).select_option(practice.foreign)
    desktop.get_by_role("button", name="Add to care team").click()
    expect(desktop.get_by_text("dr.new-colleague now cares for this patient.")).to_be_visible()
    inspect(desktop, "admin-care-teams", phone)

    desktop.get_by_role("link", name="Patients").click()
    desktop.get_by_role("link", name="Register a patient").click()
    desktop.get_by_label("Given name").fill("Synthia")
    desktop.get_by_label("Family name").fill("Testcase")
    desktop.get_by_label("Date of birth").fill("1990-04-01")
    desktop.get_by_label("Identifier system").fill("https://fhir.nhs.uk/Id/nhs-number")
    desktop.get_by_label("Identifier", exact=True).fill("9990001112")
    inspect(desktop, "admin-new-patient")
    desktop.get_by_role("button", name="Register patient").click()
    expect(desktop.get_by_role("heading", name="TESTCASE, Synthia")).to_be_visible()


def test_clinician_break_glass_shows_a_banner(page: PageFactory, practice: Practice) -> None:
    user = practice.users["clinician"]
    desktop = page()
    ui_login(desktop, user.username, user.password)
    desktop.get_by_role("link", name="Patients").click()
    expect(desktop.get_by_role("link", name="OWNFAMILY, Alicia", exact=True)).to_be_visible()
    inspect(desktop, "patients")
    desktop.get_by_role("link", name="Request emergency access").click()
    desktop.get_by_label("Why do you need emergency access?").fill(
        "Patient collapsed in clinic, history needed"
    )
    inspect(desktop, "emergency")
    desktop.get_by_role("button", name="Start emergency access").click()
    expect(desktop.get_by_text("Emergency access is on")).to_be_visible()
    desktop.get_by_label("Name or identifier").fill("otherfam")
    desktop.get_by_role("button", name="Search").click()
    desktop.get_by_role("link", name="OTHERFAMILY, Boris", exact=True).click()
    expect(desktop.get_by_role("link", name="Foreign scan", exact=True)).to_be_visible()
    inspect(desktop, "patient-record")
    desktop.get_by_role("button", name="End emergency access").click()
    expect(desktop.get_by_text("Emergency access is on")).to_have_count(0)


def test_a_form_post_without_the_csrf_token_is_refused(
    page: PageFactory, practice: Practice
) -> None:
    user = practice.users["clinician"]
    desktop = page()
    ui_login(desktop, user.username, user.password)
    desktop.goto(f"/documents/{practice.own_doc}/delete")
    desktop.locator("#main input[name=csrf_token]").evaluate("element => element.remove()")
    desktop.get_by_label("Why is it being deleted?").fill("A forged deletion attempt")
    desktop.get_by_role("button", name="Delete document").click()
    expect(
        desktop.get_by_role("heading", name=re.compile("did not come from this site"))
    ).to_be_visible()
    state = practice.service.get(f"/api/v1/documents/{practice.own_doc}").json()
    assert state["status"] == "current"


def test_login_page_is_accessible(page: PageFactory) -> None:
    desktop, phone = page(), page("phone")
    desktop.goto("/login")
    inspect(desktop, "login", phone)
    desktop.get_by_label("Username").fill("nobody")
    desktop.get_by_label("Password").fill("wrong-password")
    desktop.get_by_role("button", name="Log in").click()
    expect(desktop.get_by_role("alert")).to_contain_text("username or password is wrong")
    check_accessibility(desktop)


def test_a_newcomer_on_a_fresh_vault_files_finds_and_deletes_a_document(
    page: PageFactory, runtime: Runtime, tmp_path: Path
) -> None:
    """The README's promise: first start, the printed clinician, nothing else to read."""
    from medvault.auth.bootstrap import ensure_first_admin, ensure_first_clinician

    assert ensure_first_admin(runtime) is not None
    password = ensure_first_clinician(runtime)
    assert password is not None
    desktop = page()
    ui_login(desktop, "clinician", password)
    expect(desktop.get_by_text("No documents yet.")).to_be_visible()
    desktop.get_by_role("link", name="Patients").click()
    desktop.get_by_role("link", name="Register a patient").click()
    desktop.get_by_label("Given name").fill("Nova")
    desktop.get_by_label("Family name").fill("Newcomer")
    desktop.get_by_label("Date of birth").fill("1985-07-14")
    desktop.get_by_label("Identifier system").fill("https://fhir.nhs.uk/Id/nhs-number")
    desktop.get_by_label("Identifier", exact=True).fill("9990002223")
    desktop.get_by_role("button", name="Register patient").click()
    expect(desktop.get_by_role("heading", name="NEWCOMER, Nova")).to_be_visible()
    desktop.get_by_role("link", name="Upload files", exact=True).click()
    letter = tmp_path / "referral-letter.pdf"
    letter.write_bytes(pdf_bytes(20_000))
    desktop.locator("#files").set_input_files(letter)
    desktop.get_by_role("button", name="Upload 1 file").click()
    expect(desktop.locator(".upload-item.done")).to_have_count(1, timeout=30_000)
    desktop.get_by_role("link", name="Documents", exact=True).click()
    desktop.get_by_label("Search documents").fill("referral")
    desktop.get_by_role("button", name="Apply").click()
    desktop.get_by_role("link", name="referral-letter", exact=True).click()
    with desktop.expect_download() as download:
        desktop.get_by_role("link", name="Download", exact=True).click()
    assert Path(download.value.path()).read_bytes() == letter.read_bytes()
    desktop.get_by_role("link", name="Delete…").click()
    desktop.get_by_role("dialog").get_by_label("Why is it being deleted?").fill("Just trying it")
    desktop.get_by_role("dialog").get_by_role("button", name="Delete document").click()
    expect(desktop.get_by_text("The document was deleted.")).to_be_visible()


def test_an_upload_can_be_cancelled_and_leaves_nothing(
    page: PageFactory, practice: Practice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The single-request way (a large file goes resumable: test_resumable_upload.py).
    monkeypatch.setattr(resumable, "RESUMABLE_FROM_BYTES", 10**9)
    user = practice.users["clinician"]
    desktop = page()
    ui_login(desktop, user.username, user.password)
    desktop.goto(f"/upload?patient={practice.own}")
    before = stored_state(practice.runtime)
    # Slow the upload down (Chromium's network emulation) so there is time to cancel.
    cdp = desktop.context.new_cdp_session(desktop)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200_000},
    )
    big = tmp_path / "whole-body-scan.pdf"
    big.write_bytes(pdf_bytes(8_000_000))
    desktop.locator("#files").set_input_files(big)
    desktop.get_by_role("button", name="Upload 1 file").click()
    item = desktop.locator(".upload-item")
    expect(item.locator(".upload-status")).to_contain_text("%", timeout=20_000)
    item.get_by_role("button", name="Cancel upload of whole-body-scan.pdf").click()
    expect(item.locator(".upload-status")).to_have_text("Cancelled. Nothing was stored.")
    # The server notices the dropped connection on its own schedule; then no row, no
    # blob and no partial upload may remain.
    deadline = time.monotonic() + 15
    while stored_state(practice.runtime) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored_state(practice.runtime) == before
