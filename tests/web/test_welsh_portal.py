"""The portal in Welsh: chosen in the footer or by the browser, on every page, for every role.

"No English": a page rendered in Welsh shows no text (or spoken attribute) that is, word
for word, an English message the Welsh catalogue translates differently. Text that is
data (names, titles, times) is never a catalogue message, so it does not count.
"""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from playwright.sync_api import expect

from medvault.kit import i18n
from medvault.kit.i18n import gettext, ngettext
from medvault.web.language import LANGUAGE_COOKIE
from medvault.web.session import LOGIN_CSRF_COOKIE
from tests.support import catalogues
from tests.support.browser import PageFactory, check_accessibility, screenshot
from tests.support.factories import text_pdf_bytes
from tests.support.portal import csrf_token, portal_login
from tests.web.portal_world import Practice
from tests.web.test_reflow import _pages

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs"], indirect=True)

SPOKEN = ("aria-label", "title", "alt", "placeholder")


def cy(text: str, **values: object) -> str:
    with i18n.language("cy"):
        return gettext(text, **values)


def _english_with_welsh() -> set[str]:
    """English messages whose Welsh differs, with %(values)s dropped: compared whole."""
    english: set[str] = set()
    for entry in catalogues.catalogue("cy"):
        if not entry.id:
            continue
        sources = catalogues.forms(entry.id)
        welsh = catalogues.forms(entry.string)
        for source in sources:
            if "%(" in source or "{" in source or "<" in source:
                continue
            if source not in welsh and len(source) > 2:
                english.add(source)
    return english


# Elements that never hold a closing tag: they do not open a level.
_VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Shown(HTMLParser):
    """Text and spoken attributes, outside scripts, styles and codes (``.mono``: ids,
    hashes, action and resource names, which are the vault's identifiers)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self.lang: str | None = None
        self.script_language: str | None = None
        self._open: list[tuple[str, bool]] = []  # (tag, quiet)
        self._script_id: str | None = None

    @property
    def _quiet(self) -> bool:
        return any(quiet for _tag, quiet in self._open)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.lang = values.get("lang")
        if tag == "script":
            self._script_id = values.get("id")
        quiet = tag in ("script", "style") or "mono" in (values.get("class") or "").split()
        if not (quiet or self._quiet):
            self.texts.extend(value for name, value in attrs if name in SPOKEN and value)
        if tag not in _VOID:
            self._open.append((tag, quiet))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][0] == "script" and self._script_id == "portal-messages":
            self.script_language = json.loads(data)["language"]
        elif not self._quiet:
            self.texts.append(" ".join(data.split()))


def _shown(html: str) -> _Shown:
    parser = _Shown()
    parser.feed(html)
    return parser


def _english_on(html: str, english: set[str]) -> list[str]:
    return sorted({text for text in _shown(html).texts if text in english})


def test_every_page_of_every_role_is_welsh(practice: Practice) -> None:
    english = _english_with_welsh()
    assert len(english) > 200  # the check has something to find
    failures: list[str] = []
    with TestClient(practice.app) as visitor:
        visitor.cookies.set(LANGUAGE_COOKIE, "cy")
        login = visitor.get("/login")
        assert _shown(login.text).lang == "cy"
        failures += [f"/login: {text}" for text in _english_on(login.text, english)]
    for role, pages in _pages(practice).items():
        with practice.browser(role) as browser:
            browser.cookies.set(LANGUAGE_COOKIE, "cy")
            for _name, path in [*pages, ("missing", f"/documents/{practice.foreign_doc}")]:
                response = browser.get(path)
                shown = _shown(response.text)
                assert shown.lang == "cy", path
                assert shown.script_language == "cy", path
                failures += [f"{role} {path}: {t}" for t in _english_on(response.text, english)]
    assert not failures, "\n".join(failures)


def test_the_same_pages_in_english_are_caught_by_the_check(practice: Practice) -> None:
    # The check above could fail: an English page shows many of those messages.
    english = _english_with_welsh()
    with practice.browser("clinician") as browser:
        found = _english_on(browser.get("/documents").text, english)
    assert "Upload documents" in found and len(found) > 10


def test_the_browser_language_decides_until_the_visitor_chooses(practice: Practice) -> None:
    with TestClient(practice.app) as visitor:
        page = visitor.get("/login", headers={"Accept-Language": "cy-GB,cy;q=0.9,en;q=0.5"})
        assert _shown(page.text).lang == "cy"
        assert cy("Log in") in page.text
        token = visitor.cookies.get(LOGIN_CSRF_COOKIE)
        assert token
        chosen = visitor.post(
            "/login/language",
            data={"language": "en", "next": "/login", "csrf_token": token},
            follow_redirects=False,
        )
        assert chosen.status_code == 303 and chosen.headers["location"] == "/login"
        assert visitor.cookies.get(LANGUAGE_COOKIE) == "en"
        again = visitor.get("/login", headers={"Accept-Language": "cy"})
        assert _shown(again.text).lang == "en"
        assert again.headers["content-language"] == "en"
        assert page.headers["content-language"] == "cy"


def test_choosing_a_language_needs_the_forms_token_and_a_real_language(
    practice: Practice,
) -> None:
    with practice.browser("patient") as browser:
        token = csrf_token(browser)
        refused = browser.post("/login/language", data={"language": "cy", "next": "/"})
        assert refused.status_code == 403
        assert browser.cookies.get(LANGUAGE_COOKIE) is None
        unknown = browser.post(
            "/login/language",
            data={"language": "xx", "csrf_token": token},
            headers={"Accept": "application/json"},
        )
        assert unknown.status_code == 422
        assert unknown.headers["content-type"] == "application/problem+json"
        assert browser.cookies.get(LANGUAGE_COOKIE) is None
        away = browser.post(
            "/login/language",
            data={"language": "cy", "next": "//evil.example/x", "csrf_token": token},
            follow_redirects=False,
        )
        assert away.status_code == 303 and away.headers["location"] == "/"
        assert browser.cookies.get(LANGUAGE_COOKIE) == "cy"
        assert _shown(browser.get("/documents").text).lang == "cy"


def test_the_api_stays_english_whatever_the_language(practice: Practice) -> None:
    response = practice.service.get(
        f"/api/v1/documents/{practice.own_doc}x",
        headers={"Accept-Language": "cy", "Cookie": f"{LANGUAGE_COOKIE}=cy"},
    )
    assert response.status_code in (404, 422)
    assert response.json()["title"] == i18n.gettext(response.json()["title"])
    with i18n.language("cy"):
        assert gettext(response.json()["title"]) != response.json()["title"]


def test_a_patient_uses_the_portal_in_welsh(
    page: PageFactory, practice: Practice, tmp_path: Path
) -> None:
    user = practice.users["patient"]
    desktop = page()
    desktop.goto("/login")
    desktop.get_by_label("Language").select_option("cy")
    desktop.get_by_role("button", name="Change language").click()
    expect(desktop.locator("html")).to_have_attribute("lang", "cy")
    desktop.get_by_label(cy("Username")).fill(user.username)
    desktop.get_by_label(cy("Password")).fill(user.password)
    desktop.get_by_role("button", name=cy("Log in")).click()
    expect(desktop.get_by_role("button", name=cy("Log out"))).to_be_visible()
    expect(desktop.get_by_role("link", name=cy("My documents"), exact=True)).to_be_visible()
    check_accessibility(desktop)
    screenshot(desktop, "welsh-documents")

    # The upload page's script counts in Welsh, with Welsh plural forms.
    desktop.goto("/upload")
    files = [tmp_path / "llythyr.pdf", tmp_path / "ail.pdf"]
    for index, path in enumerate(files):
        path.write_bytes(text_pdf_bytes(f"Llythyr {index}"))
    desktop.locator("#files").set_input_files(files)
    with i18n.language("cy"):
        two_files = ngettext("Upload %(num)s file", "Upload %(num)s files", 2)
    assert two_files != "Upload 2 files"
    expect(desktop.get_by_role("button", name=two_files)).to_be_visible()

    # The document page: the PDF viewer's frame takes the page's words.
    desktop.goto(f"/documents/{practice.own_doc}")
    frame = desktop.frame_locator("iframe.pdf-frame")
    expect(frame.get_by_role("button", name=cy("Next page"))).to_be_attached()
    expect(frame.locator("html")).to_have_attribute("lang", "cy")
    check_accessibility(desktop)


def test_a_users_choice_follows_them_to_another_browser(practice: Practice) -> None:
    user = practice.users["clinician"]
    with practice.browser("clinician") as laptop:
        token = csrf_token(laptop)
        laptop.post("/login/language", data={"language": "cy", "csrf_token": token})
    with TestClient(practice.app) as phone:
        assert _shown(phone.get("/login").text).lang == "en"
        response = portal_login(phone, user.username, user.password)
        assert response.status_code == 303
        assert phone.cookies.get(LANGUAGE_COOKIE) == "cy"
        assert _shown(phone.get("/documents").text).lang == "cy"


def test_a_choice_made_before_logging_in_becomes_the_users(practice: Practice) -> None:
    user = practice.users["patient"]
    with TestClient(practice.app) as shared:
        shared.cookies.set(LANGUAGE_COOKIE, "cy")
        assert portal_login(shared, user.username, user.password).status_code == 303
    with TestClient(practice.app) as other:
        portal_login(other, user.username, user.password)
        assert other.cookies.get(LANGUAGE_COOKIE) == "cy"


def test_a_zips_contents_list_is_in_the_readers_language(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        browser.cookies.set(LANGUAGE_COOKIE, "cy")
        response = browser.post(
            "/documents/archive",
            data={
                "csrf_token": csrf_token(browser),
                "document_id": [practice.own_doc, practice.foreign_doc],
            },
        )
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as zipped:
        contents = zipped.read("contents.txt").decode()
    assert cy("Left out:") in contents and "Left out:" not in contents
    assert cy("not found, or you may not open it") in contents


@pytest.mark.parametrize("language", ["en", "cy"])
def test_the_patient_forms_own_checks_read_as_sentences_in_the_readers_language(
    practice: Practice, language: str
) -> None:
    future = (date.today() + timedelta(days=40)).isoformat()
    with practice.browser("clinician") as browser:
        browser.cookies.set(LANGUAGE_COOKIE, language)
        response = browser.post(
            "/patients/new",
            data={
                "csrf_token": csrf_token(browser),
                "identifier_system": "not a uri",
                "identifier_value": "X-1",
                "family_name": "Jones",
                "given_name": "Gwen",
                "birth_date": future,
            },
        )
    assert response.status_code == 422
    with i18n.language(language):
        # patients.schemas raises lowercase clauses; the form shows each as a sentence.
        for clause in ("birth date is in the future", "identifier system must be an absolute URI"):
            words = gettext(clause)
            sentence = words[0].upper() + words[1:] + "."
            assert str(escape(sentence)) in response.text, sentence


def test_the_portals_scripts_get_problems_in_the_pages_language(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        browser.cookies.set(LANGUAGE_COOKIE, "cy")
        refused = browser.post(
            "/login/language",
            data={"language": "xx", "csrf_token": csrf_token(browser)},
            headers={"Accept": "application/json"},
        )
    body = refused.json()
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert body["type"] == "urn:medvault:problem:validation-error"  # as the API's
    assert body["title"] == cy("The request is not valid") != "The request is not valid"
    assert body["detail"] == cy("Choose one of the languages offered.")
    assert body["detail"] != "Choose one of the languages offered."
