"""Text field types for composed documents: normalised, bounded and drawable.

Every free-text value in a draft passes through the same steps, in this order:

1. line endings become ``\\n``: browsers submit textareas with ``\\r\\n`` (HTML form
   encoding), which must not count as a forbidden control character or twice in a length;
2. Unicode NFC, so "é" typed as e + combining accent is one drawable character, and the
   same visible text always gives the same PDF bytes;
3. surrounding whitespace stripped (newlines included), then the length bounds;
4. no control characters except newline and tab (newline only in multi-line fields);
5. every character drawable by the embedded font (see ``fonts``), so the PDF never
   shows boxes where the clinician typed something.

Errors are ``PydanticCustomError`` with stable types; ``messages`` turns them into
plain sentences for the form.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints
from pydantic_core import PydanticCustomError

from medvault.documents.compose.fonts import first_undrawable


def _normalise(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the str validator reports the wrong type
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    # Stripped here rather than with StringConstraints(strip_whitespace=True): behind a
    # BeforeValidator pydantic checks the length *before* that strip, so "   " would
    # pass as a title and 200 characters plus a space would fail.
    return unicodedata.normalize("NFC", value).strip()


def _blank_to_none(value: Any) -> Any:
    # An empty optional textarea means "not given", not "given as nothing".
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _check_characters(value: str, *, multiline: bool) -> str:
    for char in value:
        if char == "\n" and not multiline:
            raise PydanticCustomError("single_line", "must be a single line")
        if unicodedata.category(char) == "Cc" and char not in "\n\t":
            raise PydanticCustomError(
                "control_character", "contains a control character", {"code": f"U+{ord(char):04X}"}
            )
    undrawable = first_undrawable(value)
    if undrawable is not None:
        raise PydanticCustomError(
            "undrawable_character",
            "contains a character the PDF cannot show",
            {"char": undrawable, "code": f"U+{ord(undrawable):04X}"},
        )
    return value


def _single_line(value: str) -> str:
    return _check_characters(value, multiline=False)


def _multi_line(value: str) -> str:
    return _check_characters(value, multiline=True)


def _at_most_lines(limit: int) -> AfterValidator:
    def check(value: str) -> str:
        if value.count("\n") + 1 > limit:
            raise PydanticCustomError("too_many_lines", "has too many lines", {"max_lines": limit})
        return value

    return AfterValidator(check)


TITLE_MAX = 200
NAME_MAX = 200
SHORT_MAX = 100
UNIT_MAX = 50
DIAGNOSIS_MAX = 5_000
DIAGNOSIS_MAX_LINES = 200
NOTES_MAX = 20_000
# Bounds the page count of a note of blank lines (about 17 pages), which the
# character limit alone would not.
NOTES_MAX_LINES = 1_000

Title = Annotated[
    str,
    BeforeValidator(_normalise),
    StringConstraints(min_length=1, max_length=TITLE_MAX),
    AfterValidator(_single_line),
]
Name = Annotated[
    str,
    BeforeValidator(_normalise),
    StringConstraints(min_length=1, max_length=NAME_MAX),
    AfterValidator(_single_line),
]
ShortText = Annotated[
    str,
    BeforeValidator(_normalise),
    StringConstraints(min_length=1, max_length=SHORT_MAX),
    AfterValidator(_single_line),
]
Unit = Annotated[
    str,
    BeforeValidator(_normalise),
    StringConstraints(min_length=1, max_length=UNIT_MAX),
    AfterValidator(_single_line),
]
_Diagnosis = Annotated[
    str,
    BeforeValidator(_normalise),
    StringConstraints(max_length=DIAGNOSIS_MAX),
    AfterValidator(_multi_line),
    _at_most_lines(DIAGNOSIS_MAX_LINES),
]
_Notes = Annotated[
    str,
    BeforeValidator(_normalise),
    StringConstraints(max_length=NOTES_MAX),
    AfterValidator(_multi_line),
    _at_most_lines(NOTES_MAX_LINES),
]
OptionalDiagnosis = Annotated[_Diagnosis | None, BeforeValidator(_blank_to_none)]
OptionalNotes = Annotated[_Notes | None, BeforeValidator(_blank_to_none)]
OptionalUnit = Annotated[Unit | None, BeforeValidator(_blank_to_none)]


def clean_line(value: str) -> str:
    """Validate one single-line value outside a model (observation values use this)."""
    return _single_line(_normalise(value))
