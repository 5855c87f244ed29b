"""Every page at every width (issue 14, item 3; WCAG 1.4.10 reflow), in Chromium.

In English and in Welsh, whose words run longer.

At 320, 375, 768, 1024 and 1440 px, and at 200 % and 400 % zoom of a 1280 px window
(640 and 320 CSS px), no page scrolls sideways, and no word in a table, a list of
details or a heading is broken letter by letter. The review found the documents table
breaking "MORG AN" and "Administrativ e note" at tablet width and 200 % zoom, row
actions running off the right edge, and hidden text escaping the table's scroll box
at 375 px.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from medvault.audit.sealer import seal_pending
from tests.support.browser import PageFactory, assert_no_horizontal_scroll, screenshot
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

WIDTHS = (320, 375, 768, 1024, 1440)
# Browser zoom of a 1280 x 800 window: the CSS viewport shrinks by the factor.
ZOOMS = {200: 640, 400: 320}

# Words (4+ letters) in these elements that render on more than one line: a word
# broken letter by letter. Hashes and ids (.mono) are meant to break anywhere.
BROKEN_WORDS_JS = """
() => {
  const broken = [];
  const where = ["td", "th", "dd", "dt", "h1", "h2", "label", "button", "summary"];
  const cells = document.querySelectorAll(where.map((tag) => `main ${tag}`).join(", "));
  for (const cell of cells) {
    if (cell.closest(".mono, .visually-hidden")) continue;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.parentElement.closest(".mono, .visually-hidden")) continue;
      const text = node.textContent;
      // Letters and digits only: a break at a hyphen or a dot is ordinary wrapping.
      const words = /[\\p{L}\\p{N}]{4,}/gu;
      for (const match of text.matchAll(words)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const lines = new Set(Array.from(range.getClientRects(), (r) => Math.round(r.top)));
        if (lines.size > 1) broken.push(`${cell.tagName.toLowerCase()}: ${match[0]}`);
      }
    }
  }
  return broken;
}
"""


def _pages(practice: Practice) -> dict[str, list[tuple[str, str]]]:
    doc, patient = practice.own_doc, practice.own
    return {
        "clinician": [
            ("documents", "/documents"),
            ("document", f"/documents/{doc}"),
            ("delete", f"/documents/{doc}/delete"),
            ("upload", "/upload"),
            ("compose", "/compose"),
            ("patients", "/patients"),
            ("patient", f"/patients/{patient}"),
            ("register", "/patients/new"),
            ("emergency", "/emergency"),
        ],
        "patient": [
            ("my-documents", "/documents"),
            ("my-document", f"/documents/{doc}"),
            ("access-history", "/audit/access-history"),
        ],
        "admin": [("users", "/admin/users"), ("care-teams", "/admin/care-teams")],
        "auditor": [("audit", "/audit")],
    }


def _check(page: Page, name: str) -> list[str]:
    problems: list[str] = []
    size = page.viewport_size
    assert size is not None
    widths = [*((str(w), w) for w in WIDTHS), *((f"zoom{z}", w) for z, w in ZOOMS.items())]
    for label, width in widths:
        page.set_viewport_size({"width": width, "height": 800})
        page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done(null)))")
        try:
            assert_no_horizontal_scroll(page)
        except AssertionError as exc:
            problems.append(f"{name} at {label}: {exc}")
        broken = page.evaluate(BROKEN_WORDS_JS)
        if broken:
            problems.append(f"{name} at {label}: words broken across lines: {broken[:6]}")
        if label in ("320", "768", "1440"):
            screenshot(page, f"reflow-{name}-{label}")
    page.set_viewport_size(size)
    return problems


@pytest.mark.parametrize("language", ["en", "cy"])
@pytest.mark.parametrize("role", ["clinician", "patient", "admin", "auditor"])
def test_every_page_reflows_at_every_width(
    page: PageFactory, practice: Practice, role: str, language: str
) -> None:
    # Long words and long names, as real records have them, on the clinician's team.
    long_named = create_patient(
        practice.service, family_name="Montgomery-Wolstenholme", given_name="Maximiliana"
    )
    put_on_care_team(
        practice.runtime, clinician_id=practice.users["clinician"].id, patient_id=long_named
    )
    upload_raw(
        practice.service,
        long_named,
        pdf_bytes(),
        title="Administrative note: multidisciplinary rehabilitation",
        filename="discharge-summary-multidisciplinary-rehabilitation-2026.pdf",
    )
    seal_pending(runtime=practice.runtime)
    desktop = page()
    user = practice.users[role]
    ui_login(desktop, user.username, user.password)
    if language != "en":
        # Welsh words run longer than English ones: every page must still fit.
        desktop.get_by_label("Language").select_option(language)
        desktop.get_by_role("button", name="Change language").click()
        expect(desktop.locator("html")).to_have_attribute("lang", language)
    problems: list[str] = []
    for name, url in _pages(practice)[role]:
        desktop.goto(url)
        problems += _check(desktop, f"{language}-{role}-{name}")
    assert not problems, "\n".join(problems)
