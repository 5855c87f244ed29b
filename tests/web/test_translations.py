"""Every word the portal shows goes through gettext, and Welsh proves it (issue 14, item 9).

Three kinds of proof: the templates hold no text outside a translation call; the
catalogues hold every message the source asks for, each with the same values and
markup; and pages rendered in Welsh show no English sentence the catalogue translates.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jinja2 import Environment
from jinja2.lexer import (
    TOKEN_BLOCK_BEGIN,
    TOKEN_DATA,
    TOKEN_NAME,
    TOKEN_WHITESPACE,
)

from medvault.kit import i18n
from medvault.kit.i18n import gettext, msg, ngettext, translate
from medvault.web.language import choose, from_accept_language
from medvault.web.script_messages import MESSAGES, PLURALS, VIEWER_MESSAGES, script_messages
from medvault.web.templating import (
    TEMPLATES_DIR,
    human_size,
    local_datetime,
    templates,
    utc_datetime,
)
from tests.support import catalogues

STATIC = TEMPLATES_DIR.parent / "static"
# Attributes a person hears or reads.
SPOKEN_ATTRIBUTES = {"aria-label", "title", "alt", "placeholder", "aria-description"}
LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)
HOLE = "\x00"  # where an expression or a translated block was


def _skeleton(env: Environment, source: str) -> str:
    """The template with every expression, statement and trans block cut to a hole."""
    out: list[str] = []
    depth = 0  # inside {% trans %} ... {% endtrans %}
    tag_next = False  # the next name token is a block's tag
    for _lineno, kind, value in env.lex(source):
        if kind == TOKEN_NAME and tag_next:
            depth += {"trans": 1, "endtrans": -1}.get(value, 0)
        if kind != TOKEN_WHITESPACE:
            tag_next = kind == TOKEN_BLOCK_BEGIN
        out.append(value if kind == TOKEN_DATA and depth == 0 else HOLE)
    return "".join(out)


class _Words(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        values = dict(attrs)
        for name, value in attrs:
            if value and (name in SPOKEN_ATTRIBUTES) and LETTERS.search(value.replace(HOLE, "")):
                self.found.append(f'{tag}[{name}="{value}"]')
        if tag == "input" and values.get("type") in ("submit", "button"):
            value = values.get("value") or ""
            if LETTERS.search(value.replace(HOLE, "")):
                self.found.append(f'input[value="{value}"]')

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        text = " ".join(data.replace(HOLE, " ").split())
        if not self._skip and LETTERS.search(text):
            self.found.append(text)


def _untranslated(path: Path) -> list[str]:
    parser = _Words()
    parser.feed(_skeleton(templates.env, path.read_text()))
    parser.close()
    return parser.found


@pytest.mark.parametrize(
    "template",
    sorted(TEMPLATES_DIR.rglob("*.html")),
    ids=lambda p: str(p.relative_to(TEMPLATES_DIR)),
)
def test_templates_show_no_text_outside_a_translation(template: Path) -> None:
    assert _untranslated(template) == []


def test_the_skeleton_check_finds_bare_text() -> None:
    # The check above must be able to fail: bare text and a bare label are found.
    skeleton = _skeleton(
        templates.env,
        "<p>Hello {{ name }}</p><p>{% trans %}Fine{% endtrans %}</p>"
        '<b aria-label="Close">{{ _("ok") }}</b>',
    )
    parser = _Words()
    parser.feed(skeleton)
    assert parser.found == ["Hello", 'b[aria-label="Close"]']


@pytest.mark.parametrize("held_by", ["messages.pot", "en", "cy"])
def test_the_catalogues_are_current(held_by: str) -> None:
    wanted = {item.key for item in catalogues.extracted()}
    source = catalogues.template() if held_by == "messages.pot" else catalogues.catalogue(held_by)
    held = {catalogues.forms(message.id)[0] for message in source if message.id}
    missing, stale = wanted - held, held - wanted
    assert not missing and not stale, (
        "run the extraction in README 'Translations': "
        f"missing {sorted(missing)[:10]}, stale {sorted(stale)[:10]}"
    )


@pytest.mark.parametrize("language", ["cy"])
def test_every_message_is_translated_with_its_values_and_markup(language: str) -> None:
    held = catalogues.catalogue(language)
    problems: list[str] = []
    for item in catalogues.extracted():
        entry = held.get(item.key)
        if entry is None:
            problems.append(f"{item.where}: not in {language}: {item.key!r}")
            continue
        if entry.fuzzy:
            problems.append(f"{item.where}: fuzzy in {language}: {item.key!r}")
        sources = catalogues.forms(entry.id)
        translations = catalogues.forms(entry.string)
        if not all(translations):
            problems.append(f"{item.where}: untranslated in {language}: {item.key!r}")
            continue
        expected_values = set().union(*(catalogues.placeholders(s) for s in sources))
        for text in translations:
            # A plural form may leave the count out ("un ddogfen"), never add a value.
            values = catalogues.placeholders(text)
            if not values <= expected_values or (
                isinstance(entry.id, str) and values != expected_values
            ):
                problems.append(f"{item.where}: values differ in {language}: {item.key!r}")
            if catalogues.tags(text) != catalogues.tags(sources[0]):
                problems.append(f"{item.where}: markup differs in {language}: {item.key!r}")
    assert not problems, "\n".join(problems[:40])


def test_welsh_words_numbers_and_dates() -> None:
    with i18n.language("cy"):
        assert gettext("Log out") != "Log out"
        # Welsh counts have six forms; each category gets its own.
        forms = i18n.plural_forms("%(num)s file", "%(num)s files")
        assert set(forms) == {"zero", "one", "two", "few", "many", "other"}
        welsh = [ngettext("%(num)s byte", "%(num)s bytes", n) for n in (1, 2, 3)]
        assert all(text.startswith(str(n)) for n, text in zip((1, 2, 3), welsh, strict=True))
        assert welsh[0] != "1 byte" and welsh[1] != "2 bytes"
        assert str(i18n.babel_locale()) == "cy_GB"
        # Welsh month names and the 24-hour clock; the UTC tooltip in Welsh too.
        moment = datetime(2026, 12, 4, 17, 31, tzinfo=UTC)
        assert local_datetime(moment, ZoneInfo("Europe/London")) == "4 Rhag 2026, 17:31"
        assert utc_datetime(moment) == "4 Rhag 2026, 17:31 UTC"
        assert human_size(2) == welsh[1]
    assert local_datetime(moment, ZoneInfo("Europe/London")) == "4 Dec 2026, 5:31 pm"
    assert gettext("Log out") == "Log out"
    assert i18n.current_language() == "en"


def test_a_service_message_with_values_is_shown_translated() -> None:
    message = msg("Titles are at most {limit} characters.", limit=200)
    assert message == "Titles are at most 200 characters."  # the API's English
    held = catalogues.catalogue("cy")
    for entry in held:
        # Any real {name} message of the source will do: translate() must use its template.
        if isinstance(entry.id, str) and "{" in entry.id and isinstance(entry.string, str):
            names = catalogues.placeholders(entry.id)
            real = msg(entry.id, **dict.fromkeys(names, "XYZ"))
            with i18n.language("cy"):
                shown = translate(real)
            assert shown == entry.string.format(**dict.fromkeys(names, "XYZ"))
            assert shown != str(real)
            break
    else:
        pytest.fail("the Welsh catalogue holds no message with values")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("cy-GB,cy;q=0.9,en;q=0.8", "cy"),
        ("en-GB,en;q=0.9,cy;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,cy;q=0.5", "cy"),
        ("cy;q=0.2, en;q=0.9", "en"),
        ("cy;q=0, fr", None),
        ("de", None),
        ("", None),
        ("cy;q=abc", None),
    ],
)
def test_accept_language_picks_the_first_language_the_portal_has(
    header: str, expected: str | None
) -> None:
    assert from_accept_language(header, i18n.LANGUAGES) == expected


def test_a_visitors_choice_beats_the_browser_and_the_default() -> None:
    assert choose(cookie="cy", accept_language="en", default="en") == "cy"
    assert choose(cookie="xx", accept_language="cy", default="en") == "cy"
    assert choose(cookie=None, accept_language="", default="cy") == "cy"
    assert choose(cookie=None, accept_language="de", default="en") == "en"


_SCRIPT_KEYS = re.compile(r"\btn?\(\s*\"([\w.]+)\"")


def test_every_word_a_script_asks_for_is_defined() -> None:
    used: set[str] = set()
    for script in ("portal.js", "upload.js", "resumable.js"):
        used |= set(_SCRIPT_KEYS.findall((STATIC / script).read_text()))
    used |= set(
        re.findall(r'data-(?:text|label)="([\w.]+)"', (STATIC / "pdf-viewer.html").read_text())
    )
    sizes = {f"size.{unit}" for unit in ("KB", "MB", "GB", "TB")}  # built as `size.${unit}`
    defined = set(MESSAGES) | set(PLURALS) | set(VIEWER_MESSAGES)
    assert used - defined == set()
    # The frame reads these two by key (pdf-viewer.mjs), not through data-text.
    unused = defined - used - sizes - {"viewer.page_of", "viewer.failed"}
    assert unused == set()


def test_scripts_get_welsh_words_and_plural_forms() -> None:
    with i18n.language("cy"):
        given = script_messages()
    assert given["language"] == "cy"
    assert given["messages"]["upload.remove"] != "Remove"
    assert len(given["plurals"]["upload.start"]) == 6
