"""The translation catalogues as tests see them: what the source asks for, and what they hold.

Extraction runs Babel in-process with the same method map and keywords as ``babel.cfg``
(README, "Translations"), so a message added to the source without updating the
catalogues fails the suite, not a Welsh reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from medvault.kit.i18n import DOMAIN, LOCALE_DIR

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src"
METHOD_MAP = [
    ("medvault/web/templates/**.html", "jinja2"),
    ("medvault/**.py", "python"),
]
OPTIONS = {
    "medvault/web/templates/**.html": {
        "extensions": "jinja2.ext.i18n",
        "trimmed": "true",
        "newstyle_gettext": "true",
    }
}
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "msg": None, "plural_noop": (1, 2)}

# %(name)s and {name}: the values a translation must keep.
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")
_TAG = re.compile(r"</?([a-z]+)\b")


@dataclass(frozen=True)
class Wanted:
    msgid: str | tuple[str, str]
    where: str

    @property
    def key(self) -> str:
        return self.msgid if isinstance(self.msgid, str) else self.msgid[0]


def extracted() -> Iterator[Wanted]:
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(SOURCE), METHOD_MAP, OPTIONS, KEYWORDS
    ):
        if isinstance(message, tuple):
            texts = tuple(part for part in message if part)
            msgid: str | tuple[str, str] = (
                texts[0] if len(texts) == 1 else (str(texts[0]), str(texts[1]))
            )
        else:
            msgid = message
        yield Wanted(msgid, f"{filename}:{lineno}")


def catalogue(language: str) -> Catalog:
    with (LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as source:
        return read_po(source, locale=language, domain=DOMAIN)


def template() -> Catalog:
    with (LOCALE_DIR / f"{DOMAIN}.pot").open("rb") as source:
        return read_po(source)


def forms(value: str | tuple[str, ...] | list[str] | None) -> list[str]:
    """An entry's id or string as a list: one text, or each plural form."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def placeholders(text: str) -> set[str]:
    return {a or b for a, b in _PLACEHOLDER.findall(text)}


def tags(text: str) -> list[str]:
    return sorted(_TAG.findall(text))
