"""One rule for text a client sends: no control characters, and bounded searches.

A NUL byte is refused by PostgreSQL (a 500 that logged the row's other values), C0
and C1 controls hide text from people reading a record or a log, and a lone
surrogate cannot be encoded as UTF-8 at all. Tab, line feed and carriage return stay
allowed: descriptions have several lines. The same rule holds on every face: REST
query parameters and bodies, FHIR resources and searches, portal forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

from medvault.kit.i18n import N_, msg
from medvault.kit.problems import InvalidCharacters, SearchTooComplex

# C0 except \t \n \r, DEL, C1, and UTF-16 surrogates (only reachable through JSON escapes).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

# A search that ORs or ANDs more than this many values or words is refused: SQLite
# raised "Expression tree is too large" at ~1,500 words, and no person types 20 words.
# For OpenAPI: text that holds none of the refused characters and at least one that is
# not whitespace (fields the server strips, then requires non-empty). Spelled out as a
# schema pattern so generated clients and fuzzers see the server's real rule.
_ALLOWED = "[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]"
_VISIBLE = "[^\\s\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]"
NONBLANK_TEXT_PATTERN = f"^{_ALLOWED}*{_VISIBLE}{_ALLOWED}*$"

MAX_SEARCH_VALUES = 100
MAX_SEARCH_WORDS = 20


def has_forbidden_characters(value: str) -> bool:
    """True if ``value`` holds a character no text field of the vault accepts."""
    return _FORBIDDEN.search(value) is not None


def require_clean_text(values: Iterable[tuple[str, str | None]]) -> None:
    """Refuse with a 422 problem naming the field (never echoing its value)."""
    for name, value in values:
        if value is not None and has_forbidden_characters(value):
            raise InvalidCharacters(
                N_("Text may not contain control characters (other than tab and line breaks)."),
                field=_printable(name),
            )


def _printable(name: str) -> str:
    # The field name is client-chosen too: keep it bounded and free of the same characters.
    return _FORBIDDEN.sub("?", name)[:100]


def _forbidden_anywhere(value: Any) -> bool:
    if isinstance(value, str):
        return has_forbidden_characters(value)
    if isinstance(value, dict):
        return any(_forbidden_anywhere(k) or _forbidden_anywhere(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_forbidden_anywhere(item) for item in value)
    return False


class CleanTextModel(BaseModel):
    """Base for request bodies: every string in the input, however nested, is checked.

    A base class rather than a per-field type, so a field added later cannot forget it.
    """

    @model_validator(mode="before")
    @classmethod
    def _refuse_control_characters(cls, data: Any) -> Any:
        if _forbidden_anywhere(data):
            raise PydanticCustomError(
                "invalid_characters",
                N_("Text may not contain control characters (other than tab and line breaks)."),
            )
        return data


def bounded_words(text: str, *, what: str) -> list[str]:
    """The words of a search text, refused beyond ``MAX_SEARCH_WORDS``."""
    words = text.split()
    if len(words) > MAX_SEARCH_WORDS:
        raise SearchTooComplex(
            msg("{what}: at most {limit} words.", what=what, limit=MAX_SEARCH_WORDS),
            max_words=MAX_SEARCH_WORDS,
        )
    return words


def bounded_values(values: list[str], *, what: str) -> list[str]:
    """A parameter's OR values, refused beyond ``MAX_SEARCH_VALUES``."""
    if len(values) > MAX_SEARCH_VALUES:
        raise SearchTooComplex(
            msg("{what}: at most {limit} values.", what=what, limit=MAX_SEARCH_VALUES),
            max_values=MAX_SEARCH_VALUES,
        )
    return values
