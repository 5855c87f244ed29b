"""Validation errors as plain sentences, keyed by the form field they belong to.

The portal shows each sentence next to its input, so keys are the flat form names
(``title``, ``medications-0-dose``); errors about the draft as a whole use
``NON_FIELD``. Messages never repeat what was typed (only, for an undrawable character,
that one character), so patient data does not travel into logs with an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from medvault.kit.problems import ValidationFailed

NON_FIELD = "__all__"

FIELD_LABELS: dict[str, str] = {
    "patient_id": "Patient",
    "document_type": "Document type",
    "title": "Title",
    "diagnosis": "Diagnosis",
    "no_known_allergies": "No known allergies",
    "allergies": "Allergies",
    "medications": "Medications",
    "observations": "Observations",
    "notes": "Notes",
}

# What one row of each list is called. Row fields (name, dose, severity…) are plain
# English words already, so they name themselves.
ROW_NAMES: dict[str, str] = {
    "allergies": "allergy",
    "medications": "medication",
    "observations": "observation",
}

# Errors about the whole draft that have an obvious field to sit next to.
_ERROR_FIELD = {"allergies_conflict": "no_known_allergies"}


def _count(number: Any) -> str:
    return f"{number:,}" if isinstance(number, int) else str(number)


def _sentence(kind: str, subject: str, ctx: Mapping[str, Any], loc: Sequence[str | int]) -> str:
    limit = _count(ctx.get("max_length", ""))
    is_list = len(loc) == 1 and loc[0] in ROW_NAMES
    if kind in {"missing", "string_too_short", "too_short"} and ctx.get("min_length", 1) <= 1:
        return f"{subject} is required."
    if kind in {"string_too_short", "too_short"}:
        return f"{subject} must be at least {_count(ctx['min_length'])} characters long."
    if kind in {"string_too_long", "too_long"} and is_list:
        return f"You can list at most {limit} {loc[0]}."
    if kind in {"string_too_long", "too_long"}:
        return f"{subject} must be at most {limit} characters long."
    templates = {
        "too_many_lines": f"{subject} can have at most {_count(ctx.get('max_lines'))} lines.",
        "single_line": f"{subject} must be a single line.",
        "control_character": (
            f"{subject} contains an invisible control character ({ctx.get('code')}); "
            "only line breaks and tabs are allowed."
        ),
        "undrawable_character": (
            f"{subject} contains “{ctx.get('char')}” ({ctx.get('code')}), which the PDF "
            "font cannot show; please write it another way."
        ),
        "uuid_parsing": f"{subject} is not a valid patient id; choose the patient again.",
        "uuid_type": f"{subject} is not a valid patient id; choose the patient again.",
        "unknown_document_type": "Choose one of the document types the form offers.",
        "enum": f"{subject} must be mild, moderate or severe.",
        "date_parsing": f"{subject} must be a date such as 2024-03-31.",
        "date_from_datetime_parsing": f"{subject} must be a date such as 2024-03-31.",
        "date_type": f"{subject} must be a date such as 2024-03-31.",
        "date_in_future": f"{subject} can't be in the future.",
        "date_too_early": f"{subject} can't be before {ctx.get('earliest')}.",
        "bool_parsing": f"{subject} must be ticked or left empty.",
        "value_type": f"{subject} must be a number or text.",
        "number_too_precise": (
            f"{subject} has too many digits: at most {ctx.get('max_digits')} in all and "
            f"{ctx.get('max_places')} after the decimal point."
        ),
        "allergies_conflict": ("Either list allergies or tick “No known allergies”, not both."),
        "no_content": (
            "Fill in at least one section: diagnosis, allergies, medications, "
            "observations or notes."
        ),
        "extra_forbidden": f"{subject} is not a field of this form.",
    }
    # Unknown kinds get a generic sentence: pydantic's own wording can quote the input.
    return templates.get(kind, f"{subject} is not valid.")


def _subject(loc: Sequence[str | int]) -> str:
    if not loc:
        return "This document"
    head = str(loc[0])
    if len(loc) >= 3 and head in ROW_NAMES and isinstance(loc[1], int):
        return f"The {loc[2]} of {ROW_NAMES[head]} {loc[1] + 1}"
    return FIELD_LABELS.get(head, head)


def _key(loc: Sequence[str | int], row_indexes: Mapping[str, Sequence[int]] | None) -> str:
    if not loc:
        return NON_FIELD
    head = str(loc[0])
    if len(loc) >= 3 and head in ROW_NAMES and isinstance(loc[1], int):
        index = loc[1]
        if row_indexes is not None and index < len(row_indexes.get(head, ())):
            index = row_indexes[head][index]
        return f"{head}-{index}-{loc[2]}"
    return head


def field_errors(
    error: ValidationError, *, row_indexes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, str]:
    """``{form field name: plain sentence}``; the first error per field wins.

    ``row_indexes`` maps the n-th row of each list back to the row number it had in the
    posted form, where empty rows were skipped, so each message lands on the right input.
    """
    errors: dict[str, str] = {}
    for detail in error.errors(include_url=False, include_input=False):
        loc = tuple(detail["loc"])
        kind = detail["type"]
        key = _ERROR_FIELD.get(kind) or _key(loc, row_indexes)
        subject = _subject(loc)
        if not loc and kind in _ERROR_FIELD:
            subject = FIELD_LABELS[_ERROR_FIELD[kind]]
        errors.setdefault(key, _sentence(kind, subject, detail.get("ctx") or {}, loc))
    return errors


class DraftInvalid(ValidationFailed):
    """The form has mistakes; ``field_errors`` says where, in plain sentences."""

    def __init__(self, field_errors: dict[str, str]) -> None:
        super().__init__(
            "Some fields of the document need attention.",
            # Same shape as every other validation-error body (docs/problems.md).
            errors=[
                {"loc": [key], "msg": message, "type": "value_error"}
                for key, message in field_errors.items()
            ],
        )
        self.field_errors = field_errors
