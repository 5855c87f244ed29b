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

from medvault.kit.i18n import N_, Msg, msg
from medvault.kit.problems import ValidationFailed

NON_FIELD = "__all__"

# Marked for translation: each sentence is a Msg (English, with its template and
# values), and the portal shows it in the reader's language.
FIELD_LABELS: dict[str, str] = {
    "patient_id": N_("Patient"),
    "document_type": N_("Document type"),
    "title": N_("Title"),
    "diagnosis": N_("Diagnosis"),
    "no_known_allergies": N_("No known allergies"),
    "allergies": N_("Allergies"),
    "medications": N_("Medications"),
    "observations": N_("Observations"),
    "notes": N_("Notes"),
}

# What one row of each list is called.
ROW_NAMES: dict[str, str] = {
    "allergies": N_("allergy"),
    "medications": N_("medication"),
    "observations": N_("observation"),
}

# Row fields are plain English words already, so in English they name themselves; these
# only let them be translated.
ROW_FIELD_NAMES: dict[str, str] = {
    "substance": N_("substance"),
    "reaction": N_("reaction"),
    "severity": N_("severity"),
    "name": N_("name"),
    "dose": N_("dose"),
    "route": N_("route"),
    "frequency": N_("frequency"),
    "value": N_("value"),
    "unit": N_("unit"),
    "date": N_("date"),
}

# "At most N rows" for each list, as a whole sentence (the list's name is plural).
_LIST_LIMITS: dict[str, str] = {
    "allergies": N_("You can list at most {limit} allergies."),
    "medications": N_("You can list at most {limit} medications."),
    "observations": N_("You can list at most {limit} observations."),
}

# Errors about the whole draft that have an obvious field to sit next to.
_ERROR_FIELD = {"allergies_conflict": "no_known_allergies"}

_DATE_EXAMPLE = N_("{subject} must be a date such as 2024-03-31.")
_NOT_A_PATIENT_ID = N_("{subject} is not a valid patient id; choose the patient again.")
_SENTENCES: dict[str, str] = {
    "too_many_lines": N_("{subject} can have at most {max_lines} lines."),
    "single_line": N_("{subject} must be a single line."),
    "control_character": N_(
        "{subject} contains an invisible control character ({code}); "
        "only line breaks and tabs are allowed."
    ),
    "undrawable_character": N_(
        "{subject} contains “{char}” ({code}), which the PDF "
        "font cannot show; please write it another way."
    ),
    "uuid_parsing": _NOT_A_PATIENT_ID,
    "uuid_type": _NOT_A_PATIENT_ID,
    "unknown_document_type": N_("Choose one of the document types the form offers."),
    "enum": N_("{subject} must be mild, moderate or severe."),
    "date_parsing": _DATE_EXAMPLE,
    "date_from_datetime_parsing": _DATE_EXAMPLE,
    "date_type": _DATE_EXAMPLE,
    "date_in_future": N_("{subject} can't be in the future."),
    "date_too_early": N_("{subject} can't be before {earliest}."),
    "bool_parsing": N_("{subject} must be ticked or left empty."),
    "value_type": N_("{subject} must be a number or text."),
    "number_too_precise": N_(
        "{subject} has too many digits: at most {max_digits} in all and "
        "{max_places} after the decimal point."
    ),
    "allergies_conflict": N_("Either list allergies or tick “No known allergies”, not both."),
    "no_content": N_(
        "Fill in at least one section: diagnosis, allergies, medications, observations or notes."
    ),
    "extra_forbidden": N_("{subject} is not a field of this form."),
}


def _count(number: Any) -> str:
    return f"{number:,}" if isinstance(number, int) else str(number)


def _sentence(kind: str, subject: str, ctx: Mapping[str, Any], loc: Sequence[str | int]) -> Msg:
    limit = _count(ctx.get("max_length", ""))
    is_list = len(loc) == 1 and loc[0] in ROW_NAMES
    if kind in {"missing", "string_too_short", "too_short"} and ctx.get("min_length", 1) <= 1:
        return msg("{subject} is required.", subject=subject)
    if kind in {"string_too_short", "too_short"}:
        return msg(
            "{subject} must be at least {limit} characters long.",
            subject=subject,
            limit=_count(ctx["min_length"]),
        )
    if kind in {"string_too_long", "too_long"} and is_list:
        return Msg(_LIST_LIMITS[str(loc[0])], {"limit": limit})
    if kind in {"string_too_long", "too_long"}:
        return msg(
            "{subject} must be at most {limit} characters long.", subject=subject, limit=limit
        )
    template = _SENTENCES.get(kind)
    if template is None:
        # Unknown kinds get a generic sentence: pydantic's own wording can quote the input.
        return msg("{subject} is not valid.", subject=subject)
    return Msg(
        template,
        {
            "subject": subject,
            "max_lines": _count(ctx.get("max_lines")),
            "code": ctx.get("code"),
            "char": ctx.get("char"),
            "earliest": ctx.get("earliest"),
            "max_digits": ctx.get("max_digits"),
            "max_places": ctx.get("max_places"),
        },
    )


def _word(word: str, names: Mapping[str, str]) -> str:
    """A field or row name, translatable when it is one the form has (else as it is)."""
    return Msg(names[word], {}) if word in names else word


def _subject(loc: Sequence[str | int]) -> str:
    if not loc:
        return msg("This document")
    head = str(loc[0])
    if len(loc) >= 3 and head in ROW_NAMES and isinstance(loc[1], int):
        return msg(
            "The {field} of {row} {number}",
            field=_word(str(loc[2]), ROW_FIELD_NAMES),
            row=_word(head, ROW_NAMES),
            number=loc[1] + 1,
        )
    return _word(head, FIELD_LABELS)


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
            subject = _word(_ERROR_FIELD[kind], FIELD_LABELS)
        errors.setdefault(key, _sentence(kind, subject, detail.get("ctx") or {}, loc))
    return errors


class DraftInvalid(ValidationFailed):
    """The form has mistakes; ``field_errors`` says where, in plain sentences."""

    def __init__(self, field_errors: dict[str, str]) -> None:
        super().__init__(
            N_("Some fields of the document need attention."),
            # Same shape as every other validation-error body (docs/problems.md).
            errors=[
                {"loc": [key], "msg": message, "type": "value_error"}
                for key, message in field_errors.items()
            ],
        )
        self.field_errors = field_errors
