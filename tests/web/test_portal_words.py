"""Words for people on a document's page, and a confirmation after every change
(issue 14, items 4 and 9), in Chromium.

The review found MIME types and SHA-256 in plain view, "Confirm & upload" and restore
saying nothing, and a delete dialog claiming only an administrator can restore, when
the clinician who deleted can restore at once.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.support.browser import PageFactory, check_accessibility
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login


def test_a_document_page_speaks_plainly_and_confirms_delete_and_restore(
    page: PageFactory, practice: Practice
) -> None:
    desktop = page()
    user = practice.users["clinician"]
    ui_login(desktop, user.username, user.password)
    desktop.goto(f"/documents/{practice.own_doc}")
    details = desktop.locator("#details-heading + dl")
    expect(details).to_contain_text("PDF document")
    expect(details).not_to_contain_text("application/pdf")
    # Hash and media type wait, folded, under "Technical details".
    technical = desktop.locator("[data-technical-details]")
    sha = technical.locator("dd.mono").last
    expect(sha).to_be_hidden()
    technical.get_by_text("Technical details").click()
    expect(sha).to_be_visible()
    expect(sha).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(technical).to_contain_text("application/pdf")
    check_accessibility(desktop)

    desktop.get_by_role("link", name=re.compile("^Delete")).click()
    dialog = desktop.get_by_role("dialog")
    expect(dialog).to_contain_text("You can restore it from this page afterwards")
    expect(dialog).not_to_contain_text("An administrator can restore it;")
    dialog.get_by_label("Why is it being deleted?").fill("Filed against the wrong visit")
    dialog.get_by_role("button", name="Delete document").click()
    done = desktop.get_by_role("status").filter(has_text="The document was deleted")
    expect(done).to_contain_text("If that was a mistake, restore it below.")

    # The clinician who deleted it restores it at once, and is told so.
    desktop.get_by_role("button", name="Restore document").click()
    expect(desktop).to_have_url(re.compile(r"\?restored=1$"))
    restored = desktop.get_by_role("status").filter(has_text="The document is restored")
    expect(restored).to_be_visible()
    expect(desktop.locator(".tag.danger", has_text="Deleted")).to_have_count(0)
