"""Batch upload with a type and a title per file, and "What is this?" for patients
(issue 14, items 4, 8 and 10), in Chromium.

The review found one type and one title for a whole batch (the title was dropped for
more than one file), a patient's own upload defaulting to "Laboratory report", and the
keyboard focus ring drawn on the limits sentence instead of "Choose files".
"""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.sync_api import Locator, Page, Route, expect
from sqlalchemy import select

from medvault.documents.models import Document
from tests.support.browser import PageFactory, check_accessibility
from tests.support.factories import jpeg_bytes, pdf_bytes
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login


def _stored(practice: Practice, patient_id: str) -> dict[str, str]:
    """Title → LOINC type of the patient's current documents."""
    with practice.runtime.clinical.session() as session:
        rows = session.execute(
            select(Document.title, Document.document_type).where(
                Document.patient_id == uuid.UUID(patient_id)
            )
        ).all()
    return {row.title: row.document_type for row in rows}


def _row(page: Page, file_name: str) -> Locator:
    return page.locator(".upload-item", has_text=file_name)


def test_each_file_gets_its_own_type_and_title(
    page: PageFactory, practice: Practice, tmp_path: Path
) -> None:
    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    desktop.goto(f"/upload?patient={practice.own}")
    files = [tmp_path / name for name in ("bloods-march.pdf", "discharge.pdf", "oops.pdf")]
    for index, path in enumerate(files):
        path.write_bytes(pdf_bytes(10_000 + index))
    before = _stored(practice, practice.own)
    desktop.locator("#files").set_input_files(files)

    # Nothing is sent yet: each file waits with the default type and its name as title.
    expect(desktop.get_by_role("button", name="Upload 3 files")).to_be_visible()
    bloods, discharge, oops = (_row(desktop, path.name) for path in files)
    expect(bloods.get_by_label("Type")).to_have_value("11502-2")
    expect(bloods.get_by_label("Title")).to_have_value("bloods-march")
    discharge.get_by_label("Type").select_option(label="Discharge summary")
    discharge.get_by_label("Title").fill("Discharge from ward 7")
    oops.get_by_role("button", name="Remove oops.pdf").click()
    expect(oops).to_have_count(0)
    # Removing a file keeps the keyboard on the list's one button.
    expect(desktop.get_by_role("button", name="Upload 2 files")).to_be_focused()
    assert _stored(practice, practice.own) == before
    check_accessibility(desktop)

    # An emptied title is refused on that file, with the focus on it.
    bloods.get_by_label("Title").fill("  ")
    desktop.get_by_role("button", name="Upload 2 files").click()
    expect(bloods.get_by_label("Title")).to_be_focused()
    expect(bloods).to_contain_text("Give this file a title.")
    assert _stored(practice, practice.own) == before

    bloods.get_by_label("Title").fill("Bloods, March")
    desktop.get_by_role("button", name="Upload 2 files").click()
    expect(desktop.locator(".upload-item.done")).to_have_count(2, timeout=30_000)
    expect(desktop.get_by_role("list", name="Files to upload")).to_be_focused()
    stored = _stored(practice, practice.own)
    added = {title: kind for title, kind in stored.items() if title not in before}
    assert added == {"Bloods, March": "11502-2", "Discharge from ward 7": "18842-5"}


def test_a_patient_says_what_their_file_is_in_their_own_words(
    page: PageFactory, practice: Practice, tmp_path: Path
) -> None:
    phone = page("phone")
    patient = practice.users["patient"]
    ui_login(phone, patient.username, patient.password)
    phone.goto("/upload")
    photo = tmp_path / "rash-on-arm.jpg"
    photo.write_bytes(jpeg_bytes())
    before = _stored(practice, practice.own)
    phone.locator("#files").set_input_files(photo)
    row = _row(phone, photo.name)
    question = row.get_by_label("What is this?")
    # No clinical default: the patient chooses.
    expect(question).to_have_value("")
    expect(question.locator("option")).to_have_text(
        [
            "Choose…",
            "A letter from a doctor or hospital",
            "Test results",
            "A scan or X-ray report",
            "A photo (for example of a rash or a wound)",
            "A prescription or a list of medicines",
            "Something else",
        ]
    )
    phone.get_by_role("button", name="Upload 1 file").click()
    expect(question).to_be_focused()
    expect(row).to_contain_text("Choose what this file is.")
    assert _stored(practice, practice.own) == before
    check_accessibility(phone)

    question.select_option(label="A photo (for example of a rash or a wound)")
    phone.get_by_role("button", name="Upload 1 file").click()
    expect(phone.locator(".upload-item.done")).to_have_count(1, timeout=30_000)
    assert _stored(practice, practice.own).get("rash-on-arm") == "72170-4"

    # The patient reads "Photo"; the clinician reads the clinical word.
    phone.goto("/documents")
    card = phone.locator("tr", has_text="rash-on-arm")
    expect(card.locator("td[data-label='Type']")).to_have_text("Photo")
    expect(phone.locator("body")).not_to_contain_text("Laboratory report")
    expect(phone.locator("body")).to_contain_text("Test results")
    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    desktop.goto("/documents")
    expect(
        desktop.locator("tr", has_text="rash-on-arm").locator("td[data-label='Type']")
    ).to_have_text("Photograph")


def test_the_focus_ring_is_on_choose_files(page: PageFactory, practice: Practice) -> None:
    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    desktop.goto(f"/upload?patient={practice.own}")
    desktop.locator("#description").focus()
    desktop.keyboard.press("Tab")
    expect(desktop.locator("#files")).to_be_focused()

    def outline(selector: str) -> str:
        style: str = desktop.eval_on_selector(selector, "e => getComputedStyle(e).outlineStyle")
        return style

    assert outline("label[for=files]") == "solid"
    assert outline("#limits") == "none"


def test_files_chosen_before_the_script_runs_are_not_lost(
    page: PageFactory, practice: Practice, tmp_path: Path
) -> None:
    """A file chosen while the page's deferred scripts still load (a quick hand, a slow
    device or network) fired its change event before anyone listened: it must still be
    offered for upload. Reproduced by holding upload.js back until the file is chosen."""
    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    desktop.route("**/static/upload.js", hold)
    desktop.goto(f"/upload?patient={practice.own}", wait_until="commit")
    letter = tmp_path / "early-letter.pdf"
    letter.write_bytes(pdf_bytes(10_000))
    desktop.locator("#files").set_input_files(letter)
    desktop.wait_for_timeout(100)  # no listener yet: the change event goes unheard
    assert len(held) == 1
    held[0].continue_()
    expect(desktop.get_by_role("button", name="Upload 1 file")).to_be_visible()
    expect(_row(desktop, "early-letter.pdf")).to_have_count(1)
