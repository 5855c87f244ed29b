"""The draft as flat HTML form fields: parsing a post, and re-filling the form for "Edit"."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.documents.compose import (
    MAX_ROWS,
    NON_FIELD,
    AllergyEntry,
    AllergySeverity,
    ClinicalDocumentDraft,
    DraftInvalid,
    MedicationEntry,
    ObservationEntry,
    parse_form,
    to_form,
)
from medvault.documents.compose.document_types import DOCUMENT_TYPES
from medvault.documents.compose.fonts import DRAWABLE
from tests.support.factories import clinical_draft


def base_form(**fields: str) -> dict[str, str]:
    return {
        "patient_id": str(uuid.uuid4()),
        "document_type": "11506-3",
        "title": "Ward round",
        **fields,
    }


def invalid(form: Mapping[str, object]) -> dict[str, str]:
    with pytest.raises(DraftInvalid) as caught:
        parse_form(form)
    return caught.value.field_errors


def test_a_full_draft_survives_the_round_trip() -> None:
    draft = clinical_draft(
        observations=[
            {"name": "Haemoglobin", "value": "13.50", "unit": "g/dL", "date": "2024-02-29"},
            {"name": "Temperature", "value": "-0.5"},
            {"name": "Culture", "value": "no growth", "unit": None},
        ],
        medications=[
            {"name": f"Drug {n}", "dose": "1 g", "route": "IV", "frequency": "8-hourly"}
            for n in range(3)
        ],
    )
    form = to_form(draft)
    assert form["observations-0-value"] == "13.50"
    assert form["observations-1-date"] == ""
    assert form["medications-2-name"] == "Drug 2"
    assert "no_known_allergies" not in form  # an unticked checkbox is absent from a post
    assert parse_form(form) == draft


def test_no_known_allergies_round_trips_as_a_ticked_checkbox() -> None:
    draft = clinical_draft(no_known_allergies=True, allergies=[])
    form = to_form(draft)
    assert form["no_known_allergies"] == "on"
    assert parse_form(form) == draft


@pytest.mark.parametrize(
    ("posted", "ticked"),
    [("on", True), ("true", True), ("1", True), ("off", False), ("", False), (" ", False)],
)
def test_checkbox_values(posted: str, ticked: bool) -> None:
    draft = parse_form(base_form(no_known_allergies=posted, notes="x"))
    assert draft.no_known_allergies is ticked
    assert not parse_form(base_form(notes="x")).no_known_allergies
    assert invalid(base_form(no_known_allergies="maybe")) == {
        "no_known_allergies": "No known allergies must be ticked or left empty."
    }


def test_spare_rows_are_skipped_and_errors_use_the_posted_row_numbers() -> None:
    form = base_form(
        **{
            # row 0 is a spare row: blank text, but its <select> still sends a value
            "allergies-0-substance": " ",
            "allergies-0-reaction": "",
            "allergies-0-severity": "mild",
            "allergies-3-substance": "Latex",
            "allergies-3-reaction": "Urticaria",
            "allergies-3-severity": "severe",
            "allergies-7-substance": "Nuts",
            "allergies-7-severity": "severe",
            "medications-2-name": "Drug Y",
        }
    )
    errors = invalid(form)
    assert errors == {
        # the second used row, posted as row 7: the message names the row the user sees
        # in a compacted list but sits next to the input that was posted
        "allergies-7-reaction": "The reaction of allergy 2 is required.",
        "medications-2-dose": "The dose of medication 1 is required.",
        "medications-2-route": "The route of medication 1 is required.",
        "medications-2-frequency": "The frequency of medication 1 is required.",
    }
    form["allergies-7-reaction"] = "Anaphylaxis"
    for field, value in {"dose": "5 mg", "route": "oral", "frequency": "daily"}.items():
        form[f"medications-2-{field}"] = value
    draft = parse_form(form)
    assert [a.substance for a in draft.allergies] == ["Latex", "Nuts"]
    assert draft.allergies[1].severity is AllergySeverity.SEVERE
    assert len(draft.medications) == 1
    # "Edit" re-fills the form with the rows compacted; the draft is unchanged
    assert parse_form(to_form(draft)) == draft
    assert "allergies-1-substance" in to_form(draft)


def test_blank_optional_row_fields_are_absent_not_invalid() -> None:
    draft = parse_form(
        base_form(
            **{
                "observations-0-name": "Mood",
                "observations-0-value": "low",
                "observations-0-unit": "",
                "observations-0-date": "",
            }
        )
    )
    assert draft.observations == (ObservationEntry(name="Mood", value="low"),)


def test_textareas_posted_with_crlf_are_accepted() -> None:
    draft = parse_form(base_form(notes="line one\r\nline two\r\n", diagnosis="a\r\n\tb"))
    assert draft.notes == "line one\nline two"
    assert draft.diagnosis == "a\n\tb"


def test_unknown_names_and_non_text_values_are_ignored() -> None:
    form: dict[str, object] = {
        **base_form(notes="x"),
        "csrf_token": "abc",
        "medications-0-colour": "red",
        "medications-12345-name": "too many digits to be a row",
        "file": object(),  # e.g. an UploadFile in Starlette's FormData
        "diagnosis": object(),
    }
    draft = parse_form(form)
    assert draft.medications == ()
    assert draft.diagnosis is None


def test_missing_required_fields_are_reported_per_field() -> None:
    errors = invalid({"notes": "x"})
    assert errors == {
        "patient_id": "Patient is required.",
        "document_type": "Document type is required.",
        "title": "Title is required.",
    }
    assert invalid(base_form()) == {
        NON_FIELD: "Fill in at least one section: diagnosis, allergies, medications, "
        "observations or notes."
    }


def test_too_many_rows_are_reported_on_the_list_and_parsing_stays_bounded() -> None:
    form = base_form()
    for index in range(2000):
        form[f"medications-{index}-name"] = f"Drug {index}"
        form[f"medications-{index}-dose"] = "1 mg"
        form[f"medications-{index}-route"] = "oral"
        form[f"medications-{index}-frequency"] = "daily"
    assert invalid(form) == {"medications": f"You can list at most {MAX_ROWS} medications."}


# Drawable text for property tests: what the form could legitimately carry.
_LETTERS = sorted(ch for ch in DRAWABLE if not ch.isspace())
_line = st.text(st.sampled_from([*_LETTERS, " "]), min_size=1, max_size=40).filter(
    lambda s: s.strip() == s and s
)
_block = st.lists(_line, min_size=1, max_size=4).map("\n".join)
_numbers = st.decimals(
    min_value=Decimal("-99999"), max_value=Decimal("99999"), places=2, allow_nan=False
)


@st.composite
def drafts(draw: st.DrawFn) -> ClinicalDocumentDraft:
    nka = draw(st.booleans())
    allergies = (
        []
        if nka
        else draw(
            st.lists(
                st.builds(
                    AllergyEntry,
                    substance=_line,
                    reaction=_line,
                    severity=st.sampled_from(AllergySeverity),
                ),
                max_size=3,
            )
        )
    )
    observation = st.builds(
        ObservationEntry,
        name=_line,
        # text values with a letter, so they never read as an over-long number
        value=st.one_of(_numbers, _line.filter(lambda s: any(c.isalpha() for c in s))),
        unit=st.none() | _line,
        date=st.none() | st.dates(min_value=date(1900, 1, 1), max_value=date(2024, 12, 31)),
    )
    return ClinicalDocumentDraft(
        patient_id=draw(st.uuids()),
        document_type=draw(st.sampled_from([option.code for option in DOCUMENT_TYPES])),
        title=draw(_line),
        diagnosis=draw(st.none() | _block),
        no_known_allergies=nka,
        allergies=tuple(allergies),
        medications=tuple(
            draw(
                st.lists(
                    st.builds(
                        MedicationEntry, name=_line, dose=_line, route=_line, frequency=_line
                    ),
                    max_size=3,
                )
            )
        ),
        observations=tuple(draw(st.lists(observation, max_size=3))),
        notes=draw(_block),  # always some content, so every generated draft is valid
    )


@settings(max_examples=60, deadline=None)
@given(drafts())
def test_any_draft_survives_the_round_trip(draft: ClinicalDocumentDraft) -> None:
    assert parse_form(to_form(draft)) == draft
