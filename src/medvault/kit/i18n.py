"""Translations of what people read: gettext catalogues, chosen per request.

The catalogues are Babel ``.po`` files under ``medvault/locale``. They are compiled
in memory the first time a language is used, so the repository holds no compiled
``.mo`` files that could drift from their sources.

The language is a context variable: the portal sets it for each request, and
everything that renders words during that request (templates, page handlers,
presenters, the messages of problems) reads it. Outside a request it is English.

Services raise problems with English text, because the API's clients branch on the
problem's ``type`` and read English details. A message whose words are fixed is marked
with :func:`N_` so that extraction finds it; one with values in it is built with
:func:`msg`, which keeps its template and values beside the English text, so the portal
can show the same message in the reader's language (:func:`translate`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any, Final

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR: Final = Path(__file__).resolve().parent.parent / "locale"
DOMAIN: Final = "messages"
DEFAULT_LANGUAGE: Final = "en"
# Each language by its own name, as a language chooser shows it.
LANGUAGES: Final[Mapping[str, str]] = {"en": "English", "cy": "Cymraeg"}
# The Babel locale behind each language: dates, numbers and time-zone names.
_BABEL_LOCALES: Final[Mapping[str, str]] = {"en": "en_GB", "cy": "cy_GB"}

_language: ContextVar[str] = ContextVar("medvault_language", default=DEFAULT_LANGUAGE)


def N_(message: str) -> str:  # noqa: N802 - the gettext convention extraction looks for
    """Marks ``message`` for extraction and returns it unchanged (translated when shown)."""
    return message


class Msg(str):
    """English text that remembers its template and values, to be shown translated.

    It is a ``str`` (the English), so logs, the API and every caller that expects a
    string go on working; :func:`translate` rebuilds it in the reader's language.
    """

    template: str
    params: Mapping[str, Any]

    def __new__(cls, template: str, params: Mapping[str, Any]) -> Msg:
        text = super().__new__(cls, template.format(**params))
        text.template = template
        text.params = dict(params)
        return text


def msg(template: str, /, **params: Any) -> Msg:
    """A message with values: ``msg("At most {limit} characters.", limit=200)``."""
    return Msg(template, params)


@cache
def _catalogue(language: str) -> NullTranslations:
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.is_file():
        return NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    # Fuzzy entries are a translator's unfinished guesses: English until confirmed. So
    # are empty ones: the English catalogue is empty but for any wording it overrides.
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def supported(language: str | None) -> str | None:
    return language if language in LANGUAGES else None


def current_language() -> str:
    return _language.get()


def babel_locale() -> Locale:
    """The locale dates and numbers are written in, for the current language."""
    return Locale.parse(_BABEL_LOCALES[current_language()])


@contextmanager
def language(code: str) -> Iterator[None]:
    token = _language.set(supported(code) or DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        _language.reset(token)


def gettext(message: str, /, **params: Any) -> str:
    """``message`` in the current language, with ``%(name)s`` values filled in."""
    text = _catalogue(current_language()).gettext(message)
    return text % params if params else text


def ngettext(singular: str, plural: str, count: int, /, **params: Any) -> str:
    """The form for ``count`` (Welsh has six), with ``%(num)s`` set to ``count``."""
    return plural_form(singular, plural, count) % {"num": count, **params}


def plural_form(singular: str, plural: str, count: int) -> str:
    """The unformatted form for ``count``: templates fill in the values themselves."""
    return _catalogue(current_language()).ngettext(singular, plural, count)


def translate(text: str) -> str:
    """A message from a service, in the current language (unknown text stays as it is)."""
    if isinstance(text, Msg):
        values = {
            name: translate(value) if isinstance(value, Msg) else value
            for name, value in text.params.items()
        }
        return gettext(text.template).format(**values)
    return gettext(text)


_ = gettext


def plural_noop(singular: str, plural: str) -> tuple[str, str]:
    """Marks a singular/plural pair for extraction; :func:`plural_forms` translates it."""
    return singular, plural


def plural_forms(singular: str, plural: str) -> dict[str, str]:
    """Each CLDR plural category of the current language, with its translated form.

    Scripts pick the category with ``Intl.PluralRules`` (the same CLDR rules), so a
    count the server never saw still gets the right form: Welsh has six.
    """
    locale = babel_locale()
    forms: dict[str, str] = {}
    # Every category shows up among the first 200 whole numbers in every CLDR language.
    for count in range(200):
        category = str(locale.plural_form(count))
        forms.setdefault(category, plural_form(singular, plural, count))
    return forms
