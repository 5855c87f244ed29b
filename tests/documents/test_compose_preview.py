"""Preview → "Confirm & upload": the confirmed bytes are exactly the previewed bytes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medvault.documents.compose import (
    PREVIEW_TTL,
    DraftInvalid,
    PreviewChanged,
    PreviewExpired,
    PreviewStampInvalid,
    RenderedDocument,
    confirm,
    confirmation_fields,
    parse_confirmation,
    render_preview,
)
from medvault.documents.compose.preview import CREATED_AT_FIELD, SHA256_FIELD
from medvault.patients.schemas import PatientOut
from tests.support.factories import clinical_draft, patient_record

NOW = datetime(2025, 6, 1, 9, 30, 15, 987654, tzinfo=UTC)
VAULT = "Synthetic Practice"
AUTHOR = "Dr Testauthor"


def preview(patient: PatientOut, **draft_overrides: Any) -> RenderedDocument:
    draft = clinical_draft(patient_id=patient.id, **draft_overrides)
    return render_preview(
        draft=draft, patient=patient, author_name=AUTHOR, vault_name=VAULT, now=NOW
    )


def confirm_post(
    form: dict[str, str], patient: PatientOut, *, now: datetime = NOW, **overrides: str
) -> RenderedDocument:
    confirmation = parse_confirmation(form, now=now)
    arguments = {"author_name": AUTHOR, "vault_name": VAULT, **overrides}
    return confirm(confirmation, patient=patient, **arguments)


def test_confirm_returns_exactly_the_previewed_bytes() -> None:
    patient = patient_record()
    shown = preview(patient)
    assert shown.created_at == NOW.replace(microsecond=0)  # the stamp travels as text
    assert shown.sha256 == hashlib.sha256(shown.pdf).hexdigest()
    assert shown.pdf.startswith(b"%PDF-")

    form = confirmation_fields(shown)
    assert form[SHA256_FIELD] == shown.sha256
    assert form[CREATED_AT_FIELD] == "2025-06-01T09:30:15+00:00"

    # the confirm post arrives minutes later, perhaps on another instance
    stored = confirm_post(form, patient, now=NOW + timedelta(minutes=14))
    assert stored.pdf == shown.pdf
    assert stored.sha256 == shown.sha256
    assert stored.draft == shown.draft


def test_a_change_to_the_patient_record_refuses_the_confirmation() -> None:
    patient = patient_record()
    form = confirmation_fields(preview(patient))
    renamed = patient.model_copy(update={"family_name": "Renamed"})
    with pytest.raises(PreviewChanged) as caught:
        confirm_post(form, renamed)
    assert caught.value.status == 409
    assert caught.value.type_uri == "urn:medvault:problem:preview-changed"


def test_another_author_or_vault_name_refuses_the_confirmation() -> None:
    patient = patient_record()
    form = confirmation_fields(preview(patient))
    with pytest.raises(PreviewChanged):
        confirm_post(form, patient, author_name="Dr Someone Else")
    with pytest.raises(PreviewChanged):
        confirm_post(form, patient, vault_name="Other Practice")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "A different title"),
        ("notes", "Edited after the preview"),
        ("medications-0-dose", "50 mg"),
        ("observations-0-value", "72.5"),  # same number, but not what was printed
        ("no_known_allergies", "on"),
        ("document_type", "11506-3"),
    ],
)
def test_edited_hidden_fields_refuse_the_confirmation(field: str, value: str) -> None:
    patient = patient_record()
    form = confirmation_fields(
        preview(patient, **({"allergies": []} if field == "no_known_allergies" else {}))
    )
    form[field] = value
    with pytest.raises(PreviewChanged):
        confirm_post(form, patient)


def test_an_edited_timestamp_refuses_the_confirmation() -> None:
    patient = patient_record()
    form = confirmation_fields(preview(patient))
    form[CREATED_AT_FIELD] = (NOW.replace(microsecond=0) - timedelta(minutes=1)).isoformat()
    with pytest.raises(PreviewChanged):
        confirm_post(form, patient)


def test_previews_expire() -> None:
    patient = patient_record()
    form = confirmation_fields(preview(patient))
    stamp = NOW.replace(microsecond=0)
    assert confirm_post(form, patient, now=stamp + PREVIEW_TTL)  # the last second is fine
    with pytest.raises(PreviewExpired) as caught:
        parse_confirmation(form, now=stamp + PREVIEW_TTL + timedelta(seconds=1))
    assert "15 minutes" in str(caught.value.detail)
    assert caught.value.type_uri == "urn:medvault:problem:preview-expired"


def test_a_backdated_stamp_is_expired_even_with_a_matching_hash() -> None:
    """The client cannot date a document in the past by rendering its own stamp."""
    patient = patient_record()
    old = render_preview(
        draft=clinical_draft(patient_id=patient.id),
        patient=patient,
        author_name=AUTHOR,
        vault_name=VAULT,
        now=NOW - timedelta(days=30),
    )
    with pytest.raises(PreviewExpired):
        parse_confirmation(confirmation_fields(old), now=NOW)


@pytest.mark.parametrize(
    "stamp",
    [
        None,
        "",
        "yesterday",
        "2025-06-01T09:30:15",  # no timezone
        "2025-06-01T09:30:15.5+00:00",  # the preview never has fractions
        "2025-06-01T09:35:00+00:00",  # ahead of this instance by more than clock skew
    ],
)
def test_a_missing_or_bad_stamp_is_refused(stamp: str | None) -> None:
    patient = patient_record()
    form = confirmation_fields(preview(patient))
    if stamp is None:
        del form[CREATED_AT_FIELD]
    else:
        form[CREATED_AT_FIELD] = stamp
    with pytest.raises(PreviewStampInvalid) as caught:
        parse_confirmation(form, now=NOW)
    assert caught.value.status == 400


def test_a_stamp_in_another_timezone_is_the_same_moment() -> None:
    patient = patient_record()
    shown = preview(patient)
    form = confirmation_fields(shown)
    form[CREATED_AT_FIELD] = "2025-06-01T11:30:15+02:00"
    assert confirm_post(form, patient).pdf == shown.pdf


@pytest.mark.parametrize("checksum", [None, "", "abc", "g" * 64])
def test_a_missing_or_bad_checksum_is_refused(checksum: str | None) -> None:
    form = confirmation_fields(preview(patient_record()))
    if checksum is None:
        del form[SHA256_FIELD]
    else:
        form[SHA256_FIELD] = checksum
    with pytest.raises(PreviewStampInvalid):
        parse_confirmation(form, now=NOW)


def test_an_invalid_draft_in_the_confirm_post_is_reported_per_field() -> None:
    form = confirmation_fields(preview(patient_record()))
    form["title"] = ""
    with pytest.raises(DraftInvalid) as caught:
        parse_confirmation(form, now=NOW)
    assert caught.value.field_errors == {"title": "Title is required."}


def test_confirm_needs_the_drafts_own_patient() -> None:
    patient = patient_record()
    confirmation = parse_confirmation(confirmation_fields(preview(patient)), now=NOW)
    with pytest.raises(ValueError, match="draft's patient"):
        confirm(confirmation, patient=patient_record(), author_name=AUTHOR, vault_name=VAULT)


def test_the_filename_is_safe_and_says_what_the_document_is() -> None:
    shown = preview(patient_record(), title="Letter / to ..\\GP: <urgent>")
    assert shown.filename == "Consult note - Letter - to ..-GP: <urgent>.pdf"
    assert preview(patient_record(), title="x" * 200).filename.endswith("x.pdf")
