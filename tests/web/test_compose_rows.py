"""Create document: adding a row changes only its own list, keeps the focus and the place
(issue 14, item 2), with JavaScript (in place) and without it (the form posts back).

Before the fix every post back grew every list by its spare rows: after three clicks
on "Add another medication" and one validation error the review counted 10 allergy,
13 medication and 10 observation rows, the page back at the top and the focus lost.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.browser import PageFactory
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

LISTS = ("allergies", "medications", "observations")


def _row_counts(page: Page) -> dict[str, int]:
    return {name: page.locator(f'[data-rows="{name}"] [data-row]').count() for name in LISTS}


def _focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement ? document.activeElement.id : ''"))


def _start(page: Page, practice: Practice) -> None:
    user = practice.users["clinician"]
    ui_login(page, user.username, user.password)
    page.goto("/compose")
    page.get_by_label("Patient").select_option(practice.own)
    page.get_by_label("Title").fill("Medication review")
    page.locator("#medications-0-name").fill("Bisoprolol")


def test_with_javascript_a_row_is_added_in_place(page: PageFactory, practice: Practice) -> None:
    desktop = page()
    _start(desktop, practice)
    assert _row_counts(desktop) == {"allergies": 2, "medications": 2, "observations": 2}
    button = desktop.get_by_role("button", name="Add another medication")
    button.scroll_into_view_if_needed()
    # A marker that a reload or navigation would wipe.
    desktop.evaluate("window.__sameDocument = true")
    scrolled = desktop.evaluate("window.scrollY")
    url = desktop.url

    for _ in range(3):
        button.click()
    assert desktop.evaluate("window.__sameDocument === true")
    assert desktop.url == url
    assert _row_counts(desktop) == {"allergies": 2, "medications": 5, "observations": 2}
    # The focus is in the newest row, its label says which row it is, and the page
    # stayed where it was (the new row is right above the button).
    assert _focused_id(desktop) == "medications-4-name"
    expect(desktop.get_by_label("Medicine (medication 5)")).to_be_focused()
    assert abs(desktop.evaluate("window.scrollY") - scrolled) < 200
    # What was typed stays, the new rows are blank, and the post carries every row.
    expect(desktop.locator("#medications-0-name")).to_have_value("Bisoprolol")
    expect(desktop.locator("#medications-4-name")).to_have_value("")
    desktop.locator("#medications-4-name").fill("Ramipril")
    desktop.locator("#medications-4-dose").fill("5 mg")
    desktop.locator("#medications-4-route").fill("oral")
    desktop.locator("#medications-4-frequency").fill("daily")
    # A validation error (Bisoprolol has no dose): the form comes back as it was posted.
    desktop.get_by_role("button", name="Preview PDF").click()
    expect(desktop.get_by_role("alert")).to_contain_text("Some fields need attention")
    assert _row_counts(desktop) == {"allergies": 2, "medications": 5, "observations": 2}
    expect(desktop.locator("#medications-4-name")).to_have_value("Ramipril")


def test_without_javascript_the_post_back_adds_one_row_to_one_list(
    page: PageFactory, practice: Practice
) -> None:
    plain = page(javascript=False)
    _start(plain, practice)
    for expected in (3, 4, 5):
        plain.get_by_role("button", name="Add another medication").click()
        # The page is the form again, scrolled to the new row, with the focus in it.
        new_row = f"medications-{expected - 1}-name"
        expect(plain).to_have_url(re.compile(rf"/compose/edit#{new_row}$"))
        assert _row_counts(plain) == {
            "allergies": 2,
            "medications": expected,
            "observations": 2,
        }
        assert _focused_id(plain) == new_row
    expect(plain.locator("#medications-0-name")).to_have_value("Bisoprolol")
    plain.get_by_role("button", name="Preview PDF").click()
    expect(plain.get_by_role("alert")).to_contain_text("Some fields need attention")
    assert _row_counts(plain) == {"allergies": 2, "medications": 5, "observations": 2}
    plain.get_by_role("button", name="Add another allergy").click()
    assert _row_counts(plain) == {"allergies": 3, "medications": 5, "observations": 2}
