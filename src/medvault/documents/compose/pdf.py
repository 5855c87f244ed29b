"""Render a draft as an A4 PDF with reportlab's platypus.

Properties the preview → confirm flow relies on (see ``preview``):

* **Deterministic.** Identical inputs give identical bytes, in any process: reportlab's
  invariant mode fixes the document id, the creation date is ``created_at`` (not the
  clock), compression is zlib at a fixed level, and the font ships inside reportlab.
* **Escaped.** Platypus ``Paragraph`` parses a markup language; every string from a
  person (draft, patient registry, author, vault name) goes through ``_para``, which
  XML-escapes it, so ``<font>`` or ``&amp;`` is printed literally and cannot change the
  layout or break the parser. Header and footer are drawn with ``drawString``, which
  interprets nothing.
* **Bounded.** The draft's limits bound the page count; the largest valid draft is a few
  dozen pages and well under a megabyte, so the PDF is built in memory (a ``BytesIO``)
  rather than streamed. The content is ours, never a client's upload.

Sections without content are left out, except allergies: "not recorded" is clinically
different from "no known allergies", so the PDF says which one it is.
"""

from __future__ import annotations

import io
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from medvault.documents.compose.draft import ClinicalDocumentDraft, ObservationEntry
from medvault.documents.compose.fonts import BOLD, REGULAR
from medvault.patients.schemas import PatientOut

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN_X = 18 * mm
MARGIN_TOP = 30 * mm  # room for the two-line running header
MARGIN_BOTTOM = 20 * mm  # room for the footer
FRAME_WIDTH = PAGE_WIDTH - 2 * MARGIN_X
PRODUCER = "medvault"

_BODY = ParagraphStyle("body", fontName=REGULAR, fontSize=10, leading=13, spaceAfter=2)
_CELL = ParagraphStyle("cell", fontName=REGULAR, fontSize=9, leading=11)
_CELL_NUMBER = ParagraphStyle("cell-number", parent=_CELL, alignment=TA_RIGHT)
_CELL_HEAD = ParagraphStyle("cell-head", parent=_CELL, fontName=BOLD)
_TITLE = ParagraphStyle("title", fontName=BOLD, fontSize=16, leading=20, spaceAfter=8)
_HEADING = ParagraphStyle(
    "heading", fontName=BOLD, fontSize=12, leading=15, spaceBefore=10, spaceAfter=4
)

_GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.92, 0.92, 0.92)),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]
)
_DETAILS = TableStyle(
    [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 0),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
    ]
)


def printable(text: str) -> str:
    """``text`` without control characters, for strings the draft did not validate."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _para(text: str, style: ParagraphStyle = _BODY) -> Paragraph:
    # escape() covers &, < and >, which is all the paragraph parser reacts to outside
    # attribute values; user text never lands inside a tag.
    return Paragraph(escape(printable(text)), style)


def _fit(text: str, font: str, size: float, width: float) -> str:
    """``text`` cut with an ellipsis so it fits ``width`` on one line."""
    text = " ".join(printable(text).split())
    if stringWidth(text, font, size) <= width:
        return text
    low, high = 0, len(text)
    while low < high:  # longest prefix that fits together with the ellipsis
        mid = (low + high + 1) // 2
        if stringWidth(text[:mid].rstrip() + "…", font, size) <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + "…"


def format_timestamp(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def patient_name(patient: PatientOut) -> str:
    return f"{patient.family_name}, {patient.given_name}"


@dataclass(frozen=True)
class _RunningText:
    """What every page repeats, so a loose page still says whose document it is."""

    vault_name: str
    type_label: str
    title: str
    patient_line: str

    def draw(self, canvas: Canvas, page: int, pages: int) -> None:
        left, right = MARGIN_X, PAGE_WIDTH - MARGIN_X
        top = PAGE_HEIGHT - 14 * mm
        canvas.saveState()
        canvas.setFillColor(colors.black)
        type_width = stringWidth(self.type_label, REGULAR, 9)
        canvas.setFont(BOLD, 9)
        canvas.drawString(left, top, _fit(self.vault_name, BOLD, 9, FRAME_WIDTH - type_width - 12))
        canvas.setFont(REGULAR, 9)
        canvas.drawRightString(right, top, self.type_label)
        canvas.setFont(BOLD, 11)
        canvas.drawString(left, top - 5.5 * mm, _fit(self.title, BOLD, 11, FRAME_WIDTH))
        canvas.setLineWidth(0.6)
        canvas.line(left, top - 8 * mm, right, top - 8 * mm)

        bottom = 11 * mm
        number = f"Page {page} of {pages}"
        number_width = stringWidth(number, REGULAR, 8)
        canvas.line(left, bottom + 4 * mm, right, bottom + 4 * mm)
        canvas.setFont(REGULAR, 8)
        canvas.drawString(
            left, bottom, _fit(self.patient_line, REGULAR, 8, FRAME_WIDTH - number_width - 12)
        )
        canvas.drawRightString(right, bottom, number)
        canvas.restoreState()


class _NumberedCanvas(Canvas):
    """Holds every page back until the end, when "Page X of Y" can be written.

    This is reportlab's well-known recipe: ``showPage`` keeps the page's state instead
    of emitting it, and ``save`` replays each page with its header and footer. It costs
    one state dict per page, which the draft bounds keep small.
    """

    def __init__(
        self, filename: io.BytesIO, *, running: _RunningText, created_at: datetime, **kw: Any
    ) -> None:
        super().__init__(filename, **kw)
        self._running = running
        self._held_pages: list[dict[str, Any]] = []
        # The PDF's CreationDate/ModDate: created_at rather than the wall clock (or
        # invariant mode's fixed 2000-01-01), so the metadata tells the truth and the
        # bytes are still reproducible.
        pdf_date = f"D:{created_at.astimezone(UTC):%Y%m%d%H%M%S}+00'00'"
        self.setDateFormatter(lambda *_parts: pdf_date)

    def showPage(self) -> None:  # noqa: N802 - reportlab's name
        self._held_pages.append(dict(self.__dict__))
        # Private, but the recipe's whole point: start a new page without emitting this one.
        self._startPage()  # type: ignore[attr-defined]

    def save(self) -> None:
        pages = len(self._held_pages)
        for number, state in enumerate(self._held_pages, start=1):
            self.__dict__.update(state)
            self._running.draw(self, number, pages)
            super().showPage()
        super().save()


def _heading(text: str) -> list[Flowable]:
    # A new page when little room is left, so a heading never sits alone at the foot
    # of a page. (keepWithNext would instead push a whole long table to the next page.)
    return [CondPageBreak(30 * mm), _para(text, _HEADING)]


def _cells(*texts: str) -> list[Paragraph]:
    return [_para(text, _CELL) for text in texts]


def _table(header: Sequence[str], rows: list[list[Paragraph]], widths: Sequence[float]) -> Table:
    head = [_para(text, _CELL_HEAD) for text in header]
    return Table(
        [head, *rows],
        colWidths=[FRAME_WIDTH * share for share in widths],
        repeatRows=1,  # a table that runs onto the next page keeps its column names
        style=_GRID,
        hAlign="LEFT",
    )


def _lines(text: str) -> list[Flowable]:
    # One paragraph per line: line breaks survive, and a 20,000-character note splits
    # across pages between paragraphs instead of re-wrapping one huge paragraph per page.
    flowables: list[Flowable] = []
    for line in text.split("\n"):
        if line.strip():
            flowables.append(_para(line.replace("\t", "    ")))
        else:
            flowables.append(Spacer(1, _BODY.leading / 2))
    return flowables


def _observation_value(entry: ObservationEntry) -> Paragraph:
    if entry.is_numeric:
        return _para(format(entry.value, "f"), _CELL_NUMBER)
    return _para(str(entry.value), _CELL)


def _sections(draft: ClinicalDocumentDraft) -> list[Flowable]:
    story: list[Flowable] = []
    if draft.diagnosis:
        story += [*_heading("Diagnosis"), *_lines(draft.diagnosis)]

    story += _heading("Allergies")
    if draft.no_known_allergies:
        story.append(_para("No known allergies."))
    elif draft.allergies:
        rows = [_cells(a.substance, a.reaction, a.severity.title()) for a in draft.allergies]
        story.append(_table(("Substance", "Reaction", "Severity"), rows, (0.4, 0.45, 0.15)))
    else:
        story.append(_para("Not recorded."))

    if draft.medications:
        rows = [_cells(m.name, m.dose, m.route, m.frequency) for m in draft.medications]
        story += [
            *_heading("Medications"),
            _table(("Medication", "Dose", "Route", "Frequency"), rows, (0.4, 0.2, 0.15, 0.25)),
        ]
    if draft.observations:
        rows = [
            [
                _para(o.name, _CELL),
                _observation_value(o),
                _para(o.unit or "", _CELL),
                _para(o.date.isoformat() if o.date else "", _CELL),
            ]
            for o in draft.observations
        ]
        story += [
            *_heading("Observations"),
            _table(("Observation", "Value", "Unit", "Date"), rows, (0.42, 0.26, 0.14, 0.18)),
        ]
    if draft.notes:
        story += [*_heading("Notes"), *_lines(draft.notes)]
    return story


def _details(
    draft: ClinicalDocumentDraft, patient: PatientOut, author_name: str, created_at: datetime
) -> Table:
    identifier = f"{patient.identifier.system}|{patient.identifier.value}"
    pairs = (
        ("Patient", patient_name(patient)),
        ("Birth date", patient.birth_date.isoformat()),
        ("Identifier", identifier),
        ("Author", author_name),
        ("Date", format_timestamp(created_at)),
        ("Document type", f"{draft.document_type_label} (LOINC {draft.document_type})"),
    )
    rows = [[_para(label, _CELL_HEAD), _para(value, _CELL)] for label, value in pairs]
    return Table(rows, colWidths=[32 * mm, FRAME_WIDTH - 32 * mm], style=_DETAILS, hAlign="LEFT")


# reportlab subsets an embedded TrueType font by seeking and reading through the one
# parsed font file the registered TTFont shares between documents (TTFontFile keeps its
# read position on the object), so two documents saved at once can read each other's
# glyph offsets: CI saw a KeyError from makeSubset under a six-thread render. Rendering
# is CPU-bound Python under the GIL, so serialising the build costs no throughput.
_BUILD_LOCK = threading.Lock()


def render_pdf(
    draft: ClinicalDocumentDraft,
    *,
    patient: PatientOut,
    author_name: str,
    created_at: datetime,
    vault_name: str,
) -> bytes:
    """The document as PDF bytes; the same arguments always give the same bytes.

    ``created_at`` must be timezone-aware; it is printed (to the minute, in UTC) and
    becomes the PDF creation date (to the second). CPU-bound (tens of milliseconds for a
    typical note): call it from a sync route or ``run_in_threadpool``.
    """
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    label = draft.document_type_label
    running = _RunningText(
        vault_name=vault_name,
        type_label=label,
        title=draft.title,
        patient_line=(
            f"{patient_name(patient)} · born {patient.birth_date.isoformat()} · "
            f"{patient.identifier.value}"
        ),
    )
    buffer = io.BytesIO()  # in memory on purpose: bounded and ours, see the module docstring
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN_X,
        rightMargin=MARGIN_X,
        topMargin=MARGIN_TOP,
        bottomMargin=MARGIN_BOTTOM,
        title=printable(draft.title),
        author=printable(author_name),
        subject=f"{label} (LOINC {draft.document_type})",
        creator=printable(vault_name),
        producer=PRODUCER,
        invariant=1,
        pageCompression=1,
    )
    story: list[Flowable] = [
        _para(draft.title, _TITLE),
        _details(draft, patient, author_name, created_at),
        Spacer(1, 4 * mm),
        *_sections(draft),
    ]
    with _BUILD_LOCK:
        document.build(
            story, canvasmaker=partial(_NumberedCanvas, running=running, created_at=created_at)
        )
    return buffer.getvalue()
