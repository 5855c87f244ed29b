"""The draft as flat HTML form fields, both ways.

Field names are ``title``, ``diagnosis``, ``notes``, ``patient_id``, ``document_type``,
the checkbox ``no_known_allergies`` and one name per row field:
``allergies-<n>-substance|reaction|severity``, ``medications-<n>-name|dose|route|frequency``
and ``observations-<n>-name|value|unit|date`` (date as YYYY-MM-DD, as ``<input
type=date>`` sends it).

The form may show spare rows and leave gaps: a row whose text inputs are all blank is
skipped whatever its ``<select>`` shows, the rest keep their order, and error keys use
the row numbers as posted so each message lands next to the right input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from medvault.documents.compose.draft import MAX_ROWS, ClinicalDocumentDraft
from medvault.documents.compose.messages import DraftInvalid, field_errors

SCALAR_FIELDS = ("patient_id", "document_type", "title", "diagnosis", "notes")
CHECKBOX = "no_known_allergies"
ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "allergies": ("substance", "reaction", "severity"),
    "medications": ("name", "dose", "route", "frequency"),
    "observations": ("name", "value", "unit", "date"),
}
# Inputs a browser always sends with a value, so they cannot tell a used row from a spare one.
_SELECTS = {"allergies": {"severity"}}
ROW_KEY = re.compile(r"(allergies|medications|observations)-(\d{1,4})-([a-z]+)")


def _rows(
    form: Mapping[str, object],
) -> tuple[dict[str, list[dict[str, str]]], dict[str, list[int]]]:
    posted: dict[str, dict[int, dict[str, str]]] = {name: {} for name in ROW_FIELDS}
    for key, value in form.items():
        match = ROW_KEY.fullmatch(key)
        if match is None or not isinstance(value, str):
            continue
        name, index, field = match.group(1), int(match.group(2)), match.group(3)
        if field in ROW_FIELDS[name]:
            posted[name].setdefault(index, {})[field] = value
    rows: dict[str, list[dict[str, str]]] = {}
    indexes: dict[str, list[int]] = {}
    for name, by_index in posted.items():
        texts = [f for f in ROW_FIELDS[name] if f not in _SELECTS.get(name, set())]
        used = [i for i in sorted(by_index) if any(by_index[i].get(f, "").strip() for f in texts)]
        # One over the limit is enough for the model to report "at most 50"; the rest
        # would only be more work.
        used = used[: MAX_ROWS + 1]
        indexes[name] = used
        # A blank input in a used row is "not given": required ones are then reported
        # as missing, optional ones (unit, date) stay empty.
        rows[name] = [{f: v for f, v in by_index[i].items() if v.strip()} for i in used]
    return rows, indexes


def parse_form(form: Mapping[str, object]) -> ClinicalDocumentDraft:
    """The draft from a form post; ``DraftInvalid`` with per-field sentences otherwise.

    ``form`` is anything mapping names to values, such as Starlette's ``FormData``;
    non-text values (file parts) and unknown names (a CSRF token) are ignored.
    """
    data: dict[str, Any] = {}
    for name in SCALAR_FIELDS:
        value = form.get(name)
        if isinstance(value, str):
            data[name] = value
    ticked = form.get(CHECKBOX)
    if isinstance(ticked, str) and ticked.strip():
        # An unticked checkbox is simply absent from the post; pydantic reads "on",
        # "true", "1", "off"… and reports anything else against the checkbox.
        data[CHECKBOX] = ticked.strip()
    rows, indexes = _rows(form)
    data.update(rows)
    try:
        return ClinicalDocumentDraft.model_validate(data)
    except ValidationError as error:
        raise DraftInvalid(field_errors(error, row_indexes=indexes)) from None


def _text(value: object) -> str:
    if isinstance(value, Decimal):
        # ``format`` keeps "13.50" as typed and never switches to exponent notation.
        return format(value, "f")
    return "" if value is None else str(value)


def to_form(draft: ClinicalDocumentDraft) -> dict[str, str]:
    """The flat form values that re-fill the form for "Edit"; ``parse_form`` inverts it."""
    values: dict[str, str] = {
        "patient_id": str(draft.patient_id),
        "document_type": draft.document_type,
        "title": draft.title,
        "diagnosis": draft.diagnosis or "",
        "notes": draft.notes or "",
    }
    if draft.no_known_allergies:
        values[CHECKBOX] = "on"
    for name, fields in ROW_FIELDS.items():
        entries: tuple[Any, ...] = getattr(draft, name)
        for index, entry in enumerate(entries):
            for field in fields:
                values[f"{name}-{index}-{field}"] = _text(getattr(entry, field))
    return values
