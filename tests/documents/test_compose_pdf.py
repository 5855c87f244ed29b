"""Rendering a draft as PDF: layout on every page, escaping, determinism and bounds."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pypdf import PdfReader

from medvault.documents.compose import MAX_ROWS, ClinicalDocumentDraft, render_pdf
from medvault.documents.compose.text import (
    DIAGNOSIS_MAX,
    NAME_MAX,
    NOTES_MAX,
    NOTES_MAX_LINES,
    SHORT_MAX,
    TITLE_MAX,
    UNIT_MAX,
)
from medvault.patients.schemas import PatientOut
from tests.support.factories import clinical_draft, patient_record

CREATED = datetime(2025, 3, 4, 14, 5, 9, tzinfo=UTC)
VAULT = "Synthetic Practice"
AUTHOR = "Dr Testauthor"


def render(draft: ClinicalDocumentDraft, **overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "patient": patient_record(id=draft.patient_id),
        "author_name": AUTHOR,
        "created_at": CREATED,
        "vault_name": VAULT,
        **overrides,
    }
    return render_pdf(draft, **arguments)


def page_texts(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def long_notes(paragraphs: int = 40) -> str:
    words = " ".join(f"word{n}" for n in range(60))
    return "\n\n".join(f"Paragraph {n}: {words}" for n in range(paragraphs))


def test_the_output_is_a_pdf() -> None:
    pdf = render(clinical_draft())
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 1


def test_long_notes_paginate_with_header_and_page_numbers_on_every_page() -> None:
    patient = patient_record(family_name="Testperson", given_name="Alex")
    draft = clinical_draft(patient_id=patient.id, title="Discharge letter", notes=long_notes())
    texts = page_texts(render(draft, patient=patient))
    pages = len(texts)
    assert pages > 1
    for number, text in enumerate(texts, start=1):
        assert VAULT in text
        assert "Consult note" in text
        assert "Discharge letter" in text
        assert f"Page {number} of {pages}" in text
        # a page that comes loose still says whose it is
        assert "Testperson, Alex" in text
        assert patient.identifier.value in text
    # the notes are all there, in order, split between pages rather than lost
    everything = "\n".join(texts)
    positions = [everything.index(f"Paragraph {n}:") for n in range(40)]
    assert positions == sorted(positions)
    assert "word59" in texts[-1]


def test_patient_author_date_and_type_are_on_the_first_page() -> None:
    patient = patient_record(
        family_name="Testperson", given_name="Robin", birth_date=date(1975, 12, 1)
    )
    draft = clinical_draft(patient_id=patient.id, document_type="18842-5")
    first = page_texts(render(draft, patient=patient))[0]
    for expected in (
        "Testperson, Robin",
        "1975-12-01",
        f"{patient.identifier.system}|{patient.identifier.value}",
        AUTHOR,
        "2025-03-04 14:05 UTC",
        "Discharge summary (LOINC 18842-5)",
        draft.title,
    ):
        assert expected in first


def test_sections_tables_and_values_are_rendered() -> None:
    draft = clinical_draft()
    text = page_texts(render(draft))[0]
    for expected in (
        "Diagnosis",
        "Synthetic condition A",
        "Allergies",
        "Substance X",
        "Moderate",
        "Medications",
        "Drug Y",
        "once daily",
        "Observations",
        "72.50",  # as typed, not 72.5
        "2024-05-01",
        "negative",
        "Notes",
        "Follow-up in six weeks.",
    ):
        assert expected in text


def test_allergies_say_whether_none_are_known_or_none_were_recorded() -> None:
    empty: dict[str, Any] = {"allergies": [], "medications": [], "observations": []}
    assert (
        "No known allergies."
        in page_texts(render(clinical_draft(**empty, no_known_allergies=True)))[0]
    )
    unrecorded = page_texts(render(clinical_draft(**empty)))[0]
    assert "Not recorded." in unrecorded
    assert "Medications" not in unrecorded  # empty sections other than allergies are left out


def test_pdf_metadata() -> None:
    draft = clinical_draft(title="Clinic letter & <summary>")
    meta = PdfReader(io.BytesIO(render(draft))).metadata
    assert meta is not None
    assert meta.title == "Clinic letter & <summary>"
    assert meta.author == AUTHOR
    assert meta.subject == "Consult note (LOINC 11488-4)"
    assert meta.creator == VAULT
    assert meta.creation_date == CREATED


INJECTIONS = [
    "<b>bold</b>",
    '<font size="40" color="red">big</font>',
    "<para>nested</para>",
    "</para>closing",
    "<br/>break",
    '<img src="/etc/passwd" width="9000"/>',
    '<a href="javascript:alert(1)">link</a>',
    "&amp; &lt; &#60; &nbsp; &unknown;",
    "Tom & Jerry < 3 > 2",
    "<b unclosed",
    "<![CDATA[x]]>",
]


@pytest.mark.parametrize("attack", INJECTIONS)
def test_markup_in_user_text_is_printed_literally(attack: str) -> None:
    patient = patient_record(family_name=f"Fam {attack}", given_name="G")
    draft = clinical_draft(
        patient_id=patient.id,
        title=f"T {attack}",
        diagnosis=f"D {attack}",
        notes=f"N {attack}",
        medications=[{"name": f"M {attack}", "dose": "1", "route": "oral", "frequency": "daily"}],
        observations=[{"name": f"O {attack}", "value": f"V {attack}"}],
    )
    pdf = render(draft, patient=patient, author_name=f"A {attack}", vault_name=f"P {attack}")
    # Narrow table cells wrap even inside a word, so compare without any whitespace.
    text = "".join("".join(page_texts(pdf)).split())
    for prefix in ("T", "D", "N", "M", "O", "V", "Fam", "A", "P"):
        assert "".join(f"{prefix} {attack}".split()) in text, prefix
    if "&amp;" in attack:
        assert "&amp;" in text and "&lt;" in text  # not decoded to & and <


def test_a_long_unbroken_word_is_wrapped_inside_the_page() -> None:
    draft = clinical_draft(
        notes="Q" * 3000,
        medications=[
            {"name": "Y" * NAME_MAX, "dose": "Z" * SHORT_MAX, "route": "oral", "frequency": "daily"}
        ],
    )
    text = "\n".join(page_texts(render(draft)))
    assert text.count("Q") == 3000
    assert max(len(line) for line in text.splitlines() if "Q" in line) < 120


def test_registry_text_the_font_cannot_draw_does_not_break_rendering() -> None:
    # Only the draft is limited to drawable text; registry names are whatever was registered.
    patient = patient_record(family_name="山田\x00", given_name="Ωμέγα")
    draft = clinical_draft(patient_id=patient.id)
    assert page_texts(render(draft, patient=patient, author_name="Dr \u202eX"))[0]


def test_same_input_gives_the_same_bytes_and_the_time_changes_them() -> None:
    patient = patient_record()
    draft = clinical_draft(patient_id=patient.id, notes=long_notes(10))
    first = render(draft, patient=patient)
    assert render(draft, patient=patient) == first
    assert render(draft, patient=patient, created_at=CREATED + timedelta(minutes=1)) != first
    # seconds are not printed, but they are the PDF's creation date
    assert render(draft, patient=patient, created_at=CREATED + timedelta(seconds=1)) != first
    same_moment = CREATED.astimezone(datetime.now().astimezone().tzinfo)
    assert render(draft, patient=patient, created_at=same_moment) == first


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render(clinical_draft(), created_at=datetime(2025, 1, 1))


_RENDER_IN_CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from datetime import datetime
    from medvault.documents.compose import ClinicalDocumentDraft, render_pdf
    from medvault.patients.schemas import PatientOut
    draft = ClinicalDocumentDraft.model_validate_json(sys.argv[1])
    patient = PatientOut.model_validate_json(sys.argv[2])
    pdf = render_pdf(draft, patient=patient, author_name=sys.argv[3],
                     created_at=datetime.fromisoformat(sys.argv[4]), vault_name=sys.argv[5])
    print(hashlib.sha256(pdf).hexdigest())
    """
)


def test_another_process_renders_the_same_bytes() -> None:
    """What confirm on a different app instance relies on: no per-process randomness."""
    patient = patient_record()
    draft = clinical_draft(patient_id=patient.id, notes=long_notes(8))
    expected = hashlib.sha256(render(draft, patient=patient)).hexdigest()
    for seed in ("1", "4242"):
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                _RENDER_IN_CHILD,
                draft.model_dump_json(),
                patient.model_dump_json(),
                AUTHOR,
                CREATED.isoformat(),
                VAULT,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert child.stdout.strip() == expected


def test_concurrent_renders_do_not_disturb_each_other() -> None:
    # The registered fonts are shared by every thread, and reportlab's font subsetter
    # reads the shared font file through one read position. A switch interval of a
    # microsecond makes threads interleave inside it: without the build lock this
    # raised KeyError/IndexError in makeSubset in about one run in ten rounds (CI saw it
    # at the default interval).
    drafts = [clinical_draft(notes=f"{long_notes(6)} {n} ÀÉÎÕÜ€") for n in range(6)]
    patient = patient_record()
    expected = [render(draft, patient=patient) for draft in drafts]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            for _ in range(10):
                got = list(pool.map(lambda d: render(d, patient=patient), drafts))
                assert got == expected
    finally:
        sys.setswitchinterval(interval)


def _largest_draft(patient: PatientOut) -> ClinicalDocumentDraft:
    def text(length: int) -> str:
        return ("Lorem ipsum dolor sit amet " * (length // 27 + 1))[:length].strip()

    return ClinicalDocumentDraft(
        patient_id=patient.id,
        document_type="18842-5",
        title=text(TITLE_MAX),
        diagnosis="\n".join([text(DIAGNOSIS_MAX // 200 - 1)] * 200),
        allergies=[{"substance": text(NAME_MAX), "reaction": text(NAME_MAX), "severity": "severe"}]
        * MAX_ROWS,
        medications=[
            {"name": text(NAME_MAX), "dose": text(SHORT_MAX), "route": text(SHORT_MAX)}
            | {"frequency": text(SHORT_MAX)}
        ]
        * MAX_ROWS,
        observations=[{"name": text(NAME_MAX), "value": text(SHORT_MAX), "unit": text(UNIT_MAX)}]
        * MAX_ROWS,
        notes="\n".join(["x" * (NOTES_MAX // NOTES_MAX_LINES - 1)] * NOTES_MAX_LINES),
    )


def test_the_largest_valid_draft_renders_to_a_bounded_pdf() -> None:
    patient = patient_record()
    pdf = render(_largest_draft(patient), patient=patient)
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    # Measured: 47 pages and under 100 kB. The limits leave room for layout changes but
    # would catch a bound that stopped working (unbounded rows or lines).
    assert 30 < pages <= 60
    assert len(pdf) < 400_000
