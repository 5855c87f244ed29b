"""The main flows of every role with the keyboard alone (issue 14, item 10), asserting
where the focus is after each action.

The review found the focus reset to the page body after sorting or filtering, and 31
Tabs from the top of the documents page to the first document.
"""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect

from tests.support.browser import PageFactory
from tests.support.users import MadeUser
from tests.web.portal_world import Practice

FIRST_DOCUMENT = "table.documents tbody tr a[href^='/documents/']"


def _focused(target: Locator) -> bool:
    found: bool = target.first.evaluate("e => e === document.activeElement")
    return found


def tab_to(page: Page, target: str | Locator, limit: int = 40) -> int:
    """Press Tab until ``target`` (a CSS selector or a locator) has the focus; how many
    presses it took."""
    wanted = page.locator(target) if isinstance(target, str) else target
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if _focused(wanted):
            return presses
    raise AssertionError(f"{target} not reached in {limit} Tabs on {page.url}")


def keyboard_login(page: Page, user: MadeUser) -> None:
    page.goto("/login")
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(user.username)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(user.password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def skip_to_main(page: Page) -> None:
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_a_clinician_searches_sorts_and_opens_with_the_keyboard(
    page: PageFactory, practice: Practice
) -> None:
    desktop = page()
    keyboard_login(desktop, practice.users["clinician"])
    skip_to_main(desktop)
    assert tab_to(desktop, "#q") <= 3
    desktop.keyboard.type("lab")
    desktop.keyboard.press("Enter")
    # The results, not the top of the page.
    results = desktop.locator("#results")
    expect(results).to_be_focused()
    expect(results).to_have_text("1 document on this page, best matches first.")
    # Past the ZIP bar, the table's scroll region, "select all", four sort buttons and
    # the row's checkbox (the review counted 31 from the top of the page).
    assert tab_to(desktop, FIRST_DOCUMENT) <= 9

    desktop.goto("/documents")
    skip_to_main(desktop)
    tab_to(desktop, "button.sort[value='title']")
    desktop.keyboard.press("Enter")
    # The same column's button keeps the focus; pressed again it would sort Z to A.
    title = desktop.locator("button.sort[value='title-desc']")
    expect(title).to_be_focused()
    expect(desktop.locator("th", has=title)).to_have_attribute("aria-sort", "ascending")
    tab_to(desktop, FIRST_DOCUMENT)
    desktop.keyboard.press("Enter")
    expect(desktop.get_by_role("heading", level=1)).to_have_text("Own lab report")


def test_a_patient_reaches_a_document_and_the_timeline_with_the_keyboard(
    page: PageFactory, practice: Practice
) -> None:
    phone = page("phone")
    keyboard_login(phone, practice.users["patient"])
    skip_to_main(phone)
    # On a phone the filters are folded: the first document is a few Tabs away.
    assert tab_to(phone, FIRST_DOCUMENT) <= 8
    phone.keyboard.press("Enter")
    expect(phone.get_by_role("heading", level=1)).to_have_text("Own lab report")
    phone.goto("/documents")
    tab_to(phone, "a[href='/timeline']")
    phone.keyboard.press("Enter")
    expect(phone.get_by_role("heading", level=1)).to_have_text("My timeline")
    expect(phone.get_by_role("link", name="Timeline")).to_have_attribute("aria-current", "page")


def test_an_admin_names_a_user_with_the_keyboard(page: PageFactory, practice: Practice) -> None:
    desktop = page()
    keyboard_login(desktop, practice.users["admin"])
    desktop.goto("/admin/users")
    skip_to_main(desktop)
    clinician = practice.users["clinician"]
    tab_to(desktop, desktop.locator("summary", has_text=f"Edit name of {clinician.username}"))
    desktop.keyboard.press("Enter")
    desktop.keyboard.press("Tab")
    expect(desktop.locator(":focus")).to_have_attribute("name", "display_name")
    desktop.keyboard.type("Dr Priya Patel")
    desktop.keyboard.press("Tab")
    desktop.keyboard.type("GP")
    desktop.keyboard.press("Enter")
    # The keyboard lands on what happened.
    flash = desktop.locator("[data-flash]")
    expect(flash).to_be_focused()
    expect(flash).to_contain_text("is now shown as “Dr Priya Patel, GP”")


def test_an_auditor_filters_the_log_with_the_keyboard(
    page: PageFactory, practice: Practice
) -> None:
    desktop = page()
    keyboard_login(desktop, practice.users["auditor"])
    skip_to_main(desktop)
    tab_to(desktop, "#action")
    desktop.keyboard.type("auth.login")
    desktop.keyboard.press("Enter")
    results = desktop.locator("#results")
    expect(results).to_be_focused()
    expect(results).to_contain_text("on this page, newest first.")
    expect(desktop.locator("table.audit tbody tr").first).to_contain_text("auth.login")
