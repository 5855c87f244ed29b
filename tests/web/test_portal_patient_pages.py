"""Patients' pages (issue 14, item 6): "New" since the last visit, and a phone layout
whose first screen shows documents, not five filter fields.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.support.browser import PageFactory
from tests.support.factories import pdf_bytes, upload_raw
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

NEW_BADGE = re.compile(r'data-new>New<span class="visually-hidden"> since your last visit')


def test_documents_stored_since_the_last_visit_are_marked_new(practice: Practice) -> None:
    with practice.browser("patient") as first_visit:
        # The very first visit has no "last visit": nothing is marked.
        assert not NEW_BADGE.search(first_visit.get("/documents").text)
    # A letter is filed after that visit; the lab report was there before it.
    letter = upload_raw(practice.service, practice.own, pdf_bytes(), title="Clinic letter").json()
    with practice.browser("patient") as second_visit:
        page = second_visit.get("/documents").text
        rows = re.findall(r'<tr data-document-id="([0-9a-f-]{36})">(.*?)</tr>', page, re.S)
        new = {doc for doc, row in rows if NEW_BADGE.search(row)}
        assert new == {letter["id"]}
        assert practice.own_doc in {doc for doc, _ in rows}


def test_on_a_phone_the_filters_fold_behind_one_button(
    page: PageFactory, practice: Practice
) -> None:
    phone = page("phone")
    user = practice.users["patient"]
    ui_login(phone, user.username, user.password)
    fold = phone.locator("details[data-fold-filters]")
    expect(fold).not_to_have_attribute("open", "")
    search = phone.get_by_label("Search documents")
    expect(search).to_be_hidden()
    # The first screen shows a document.
    first = phone.get_by_role("link", name="Own lab report", exact=True)
    box, screen = first.bounding_box(), phone.viewport_size
    assert box is not None and screen is not None
    assert box["y"] + box["height"] <= screen["height"]
    phone.locator("details[data-fold-filters] > summary").click()
    expect(search).to_be_visible()
    search.fill("lab")
    phone.get_by_role("button", name="Apply").click()
    # With a filter in use the form stays open, and the button says so.
    expect(search).to_be_visible()
    expect(search).to_have_value("lab")
    expect(phone.locator("details[data-fold-filters] > summary")).to_have_text("Filter (in use)")

    desktop = page()
    ui_login(desktop, user.username, user.password)
    expect(desktop.get_by_label("Search documents")).to_be_visible()
    expect(desktop.locator("details[data-fold-filters] > summary")).to_be_hidden()
