"""The composed-document draft: each validation rule, and the sentence the form shows."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from medvault.documents.compose import (
    DOCUMENT_TYPES,
    MAX_ROWS,
    NON_FIELD,
    ClinicalDocumentDraft,
    DraftInvalid,
    field_errors,
)
from tests.support.factories import clinical_draft, draft_data

EMPTY_SECTIONS: dict[str, Any] = {
    "diagnosis": None,
    "allergies": [],
    "medications": [],
    "observations": [],
    "notes": None,
}


def errors_for(**overrides: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        ClinicalDocumentDraft.model_validate(draft_data(**overrides))
    return field_errors(caught.value)


def medication(**overrides: str) -> dict[str, str]:
    return {"name": "Drug Y", "dose": "5 mg", "route": "oral", "frequency": "daily", **overrides}


def observation(**overrides: Any) -> dict[str, Any]:
    return {"name": "Pulse", "value": "64", "unit": "/min", **overrides}


def test_a_full_draft_is_valid_and_cleaned() -> None:
    draft = clinical_draft(title="  Follow-up  ", diagnosis="  \n ", notes="a\r\nb\rc")
    assert draft.title == "Follow-up"
    assert draft.diagnosis is None  # blank optional text means "not given"
    assert draft.notes == "a\nb\nc"  # browsers post textareas with CRLF
    assert draft.observations[0].value == Decimal("72.50")
    assert draft.observations[1].value == "negative"
    assert draft.document_type_label == "Consult note"


def test_the_document_types_are_well_formed_unique_and_accepted() -> None:
    codes = [option.code for option in DOCUMENT_TYPES]
    assert len(set(codes)) == len(codes)
    assert {"11488-4", "18842-5", "11506-3", "57133-1", "34108-1"} <= set(codes)
    for option in DOCUMENT_TYPES:
        assert re.fullmatch(r"\d{1,7}-\d", option.code)
        assert option.label and option.label[0].isupper()
        assert clinical_draft(document_type=option.code).document_type_label == option.label


@pytest.mark.parametrize(
    ("overrides", "key", "sentence"),
    [
        ({"title": "   "}, "title", "Title is required."),
        ({"title": "x" * 201}, "title", "Title must be at most 200 characters long."),
        ({"title": "one\ntwo"}, "title", "Title must be a single line."),
        ({"document_type": "11502-2"}, "document_type", "Choose one of the document types"),
        ({"patient_id": "not-a-uuid"}, "patient_id", "Patient is not a valid patient id"),
        ({"diagnosis": "d" * 5_001}, "diagnosis", "at most 5,000 characters"),
        ({"notes": "n" * 20_001}, "notes", "Notes must be at most 20,000 characters long."),
        ({"notes": "line\n" * 1_000 + "x"}, "notes", "Notes can have at most 1,000 lines."),
    ],
)
def test_scalar_rules(overrides: dict[str, Any], key: str, sentence: str) -> None:
    assert sentence in errors_for(**overrides)[key]


def test_title_may_be_exactly_200_characters_after_stripping() -> None:
    assert clinical_draft(title=" " + "x" * 200 + " ").title == "x" * 200


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85"])
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"title": "T{c}x"}, "title"),
        ({"diagnosis": "D{c}x"}, "diagnosis"),
        ({"notes": "N{c}x"}, "notes"),
        ({"medications": [medication(name="M{c}x")]}, "medications-0-name"),
        ({"observations": [observation(unit="u{c}x")]}, "observations-0-unit"),
        ({"observations": [observation(value="v{c}x")]}, "observations-0-value"),
        (
            {"allergies": [{"substance": "S{c}x", "reaction": "r", "severity": "mild"}]},
            "allergies-0-substance",
        ),
    ],
)
def test_control_characters_are_refused_everywhere(
    overrides: dict[str, Any], key: str, char: str
) -> None:
    filled = _fill(overrides, char)
    message = errors_for(**filled)[key]
    assert "control character" in message
    assert f"U+{ord(char):04X}" in message


def _fill(value: Any, char: str) -> Any:
    if isinstance(value, str):
        return value.replace("{c}", char)
    if isinstance(value, list):
        return [_fill(item, char) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, char) for key, item in value.items()}
    return value


def test_newline_and_tab_are_allowed_in_notes_but_not_in_single_line_fields() -> None:
    draft = clinical_draft(notes="a\n\tb", diagnosis="x\ty")
    assert draft.notes == "a\n\tb"
    assert draft.diagnosis == "x\ty"
    assert clinical_draft(medications=[medication(dose="5\tmg")]).medications[0].dose == "5\tmg"
    errors = errors_for(medications=[medication(dose="5\nmg")])
    assert errors["medications-0-dose"] == "The dose of medication 1 must be a single line."


@pytest.mark.parametrize("char", ["日", "\u202e", "\u200b", "😀", "→"])
def test_characters_the_pdf_font_cannot_draw_are_refused(char: str) -> None:
    message = errors_for(notes=f"ok {char} ok")["notes"]
    assert "cannot show" in message
    assert f"U+{ord(char):04X}" in message


def test_text_is_nfc_normalised_so_combining_accents_are_drawable() -> None:
    assert clinical_draft(title="Cafe\u0301").title == "Caf\u00e9"


def test_a_draft_needs_at_least_one_clinical_section() -> None:
    errors = errors_for(**EMPTY_SECTIONS)
    assert errors == {
        NON_FIELD: "Fill in at least one section: diagnosis, allergies, medications, "
        "observations or notes."
    }
    for section, value in [
        ("diagnosis", "x"),
        ("notes", "x"),
        ("no_known_allergies", True),
        ("medications", [medication()]),
        ("observations", [observation()]),
        ("allergies", [{"substance": "s", "reaction": "r", "severity": "mild"}]),
    ]:
        assert clinical_draft(**{**EMPTY_SECTIONS, section: value}).has_content


def test_no_known_allergies_and_listed_allergies_exclude_each_other() -> None:
    errors = errors_for(no_known_allergies=True)
    assert errors == {
        "no_known_allergies": "Either list allergies or tick “No known allergies”, not both."
    }
    assert clinical_draft(no_known_allergies=True, allergies=[]).no_known_allergies


@pytest.mark.parametrize(
    ("row", "key", "sentence"),
    [
        (
            {"substance": "s", "severity": "mild"},
            "allergies-0-reaction",
            "The reaction of allergy 1 is required.",
        ),
        (
            {"substance": "s", "reaction": "r"},
            "allergies-0-severity",
            "The severity of allergy 1 is required.",
        ),
        (
            {"substance": "s", "reaction": "r", "severity": "fatal"},
            "allergies-0-severity",
            "The severity of allergy 1 must be mild, moderate or severe.",
        ),
        (
            {"substance": "s" * 201, "reaction": "r", "severity": "mild"},
            "allergies-0-substance",
            "The substance of allergy 1 must be at most 200 characters long.",
        ),
    ],
)
def test_allergy_rows(row: dict[str, str], key: str, sentence: str) -> None:
    assert errors_for(allergies=[row])[key] == sentence


@pytest.mark.parametrize(
    ("field", "limit"), [("name", 200), ("dose", 100), ("route", 100), ("frequency", 100)]
)
def test_medication_fields_are_required_and_bounded(field: str, limit: int) -> None:
    rows = [medication(), medication(**{field: " "}), medication(**{field: "z" * (limit + 1)})]
    errors = errors_for(medications=rows)
    assert errors[f"medications-1-{field}"] == f"The {field} of medication 2 is required."
    assert errors[f"medications-2-{field}"] == (
        f"The {field} of medication 3 must be at most {limit} characters long."
    )
    assert "medications-0-" + field not in errors
    assert clinical_draft(medications=[medication(**{field: "z" * limit})])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("13.50", Decimal("13.50")),
        ("-2", Decimal("-2")),
        (" 7 ", Decimal("7")),
        ("1e3", "1e3"),  # exponents stay text, so the PDF shows what was typed
        ("<0.1", "<0.1"),
        ("trace", "trace"),
        (4.25, Decimal("4.25")),
    ],
)
def test_observation_values_are_numbers_or_text(value: Any, expected: Decimal | str) -> None:
    entry = clinical_draft(observations=[observation(value=value)]).observations[0]
    assert entry.value == expected
    assert type(entry.value) is type(expected)
    assert entry.is_numeric == isinstance(expected, Decimal)


@pytest.mark.parametrize(
    ("row", "sentence"),
    [
        (observation(value=""), "The value of observation 1 is required."),
        (observation(value="1.1234567"), "The value of observation 1 has too many digits"),
        (observation(value="1" * 16), "The value of observation 1 has too many digits"),
        (observation(value="v" * 101), "at most 100 characters long."),
        (observation(value=True), "The value of observation 1 must be a number or text."),
        (observation(value=["1"]), "The value of observation 1 must be a number or text."),
    ],
)
def test_observation_value_rules(row: dict[str, Any], sentence: str) -> None:
    assert sentence in errors_for(observations=[row])["observations-0-value"]


def test_observation_dates() -> None:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert clinical_draft(observations=[observation(date=tomorrow)]).observations[0].date
    assert clinical_draft(observations=[observation(date=None)]).observations[0].date is None
    cases = {
        (tomorrow + timedelta(days=1)).isoformat(): "can't be in the future.",
        "1899-12-31": "can't be before 1900-01-01.",
        "31/12/2020": "must be a date such as 2024-03-31.",
    }
    for raw, ending in cases.items():
        message = errors_for(observations=[observation(date=raw)])["observations-0-date"]
        assert message == f"The date of observation 1 {ending}"


@pytest.mark.parametrize("name", ["allergies", "medications", "observations"])
def test_lists_are_bounded(name: str) -> None:
    rows = {
        "allergies": {"substance": "s", "reaction": "r", "severity": "mild"},
        "medications": medication(),
        "observations": observation(),
    }
    assert len(clinical_draft(**{name: [rows[name]] * MAX_ROWS}).model_dump()[name]) == MAX_ROWS
    errors = errors_for(**{name: [rows[name]] * (MAX_ROWS + 1)})
    assert errors == {name: f"You can list at most {MAX_ROWS} {name}."}


def test_unknown_members_are_refused() -> None:
    assert errors_for(signature="x")["signature"] == "signature is not a field of this form."


def test_messages_never_repeat_what_was_typed() -> None:
    secret = "Qzxv"
    errors = errors_for(
        title=secret * 60,
        diagnosis=secret + "\x00",
        patient_id=secret,
        document_type=secret,
        medications=[medication(name=secret * 60, dose=secret + "\n" + secret)],
        observations=[observation(value=secret * 30, date=secret)],
    )
    assert len(errors) == 8
    assert not [message for message in errors.values() if secret.lower() in message.lower()]


def test_draft_invalid_is_a_validation_problem_with_the_sentences() -> None:
    problem = DraftInvalid({"title": "Title is required.", NON_FIELD: "Fill in a section."})
    body = problem.to_dict()
    assert problem.status == 422
    assert body["type"] == "urn:medvault:problem:validation-error"
    assert body["errors"] == [
        {"loc": ["title"], "msg": "Title is required.", "type": "value_error"},
        {"loc": [NON_FIELD], "msg": "Fill in a section.", "type": "value_error"},
    ]


def test_observation_date_field_is_a_real_date() -> None:
    entry = clinical_draft(observations=[observation(date="2024-02-29")]).observations[0]
    assert entry.date == date(2024, 2, 29)
