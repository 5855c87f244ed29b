"""Synthetic test data. Nothing here resembles a real person."""

from __future__ import annotations

import io
import os
import secrets
import struct
import uuid
import zlib
from datetime import UTC, date, datetime
from typing import Any

import httpx
from fastapi.testclient import TestClient

from medvault.access.models import CareTeamMember
from medvault.documents.compose import ClinicalDocumentDraft
from medvault.kit.clock import utcnow
from medvault.patients.schemas import Identifier, PatientOut
from medvault.runtime import Runtime

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"


def pdf_bytes(size: int = 4096) -> bytes:
    """A PDF-looking payload: correct magic bytes, random body, unique per call."""
    head = b"%PDF-1.7\n%synthetic\n"
    return head + os.urandom(max(0, size - len(head)))


def text_pdf_bytes(*lines: str) -> bytes:
    """A real one-page PDF with a text layer (reportlab), unique per call.

    For tests that need the file parsed (previews, text extraction, search), where
    :func:`pdf_bytes`'s random body would only ever be "unreadable".
    """
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4)
    y = 780
    for line in (*lines, f"Reference {uuid.uuid4()}"):
        page.drawString(72, y, line)
        y -= 18
    page.showPage()
    page.save()
    return buffer.getvalue()


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + os.urandom(3))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def patient_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "identifier": {"system": NHS_SYSTEM, "value": f"9{secrets.randbelow(10**9):09d}"},
        "family_name": "Testperson",
        "given_name": f"Synthetic{secrets.token_hex(2)}",
        "birth_date": "1980-02-29",
    }
    payload.update(overrides)
    return payload


def create_patient(client: TestClient, **overrides: Any) -> str:
    response = client.post("/api/v1/patients", json=patient_payload(**overrides))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def upload_multipart(
    client: TestClient,
    patient_id: str,
    content: bytes,
    *,
    filename: str = "report.pdf",
    document_type: str = "11502-2",
    **fields: str,
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/v1/documents",
        files={"file": (filename, content, "application/pdf")},
        data={"patient_id": patient_id, "document_type": document_type, **fields},
    )
    return response


def upload_raw(
    client: TestClient,
    patient_id: str,
    content: bytes,
    *,
    filename: str = "report.pdf",
    content_type: str = "application/pdf",
    **params: str,
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/v1/documents",
        params={
            "patient_id": patient_id,
            "document_type": "11502-2",
            "filename": filename,
            **params,
        },
        content=content,
        headers={"content-type": content_type},
    )
    return response


def jpeg_bytes() -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + os.urandom(512)


def tiff_bytes() -> bytes:
    return b"II*\x00\x08\x00\x00\x00" + os.urandom(512)


def dicom_bytes() -> bytes:
    """Part 10 file: 128-byte preamble, then the DICM magic."""
    return b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + os.urandom(512)


def patient_record(**overrides: Any) -> PatientOut:
    """A registry patient as the portal would pass it to the document composer."""
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "identifier": Identifier(system=NHS_SYSTEM, value=f"9{secrets.randbelow(10**9):09d}"),
        "family_name": "Testperson",
        "given_name": f"Synthetic{secrets.token_hex(2)}",
        "birth_date": date(1980, 2, 29),
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    fields.update(overrides)
    return PatientOut(**fields)


def draft_data(**overrides: Any) -> dict[str, Any]:
    """Raw input for a composed document: one row per list, every section filled."""
    data: dict[str, Any] = {
        "patient_id": str(uuid.uuid4()),
        "document_type": "11488-4",
        "title": f"Consultation {secrets.token_hex(3)}",
        "diagnosis": "Synthetic condition A\nSynthetic condition B",
        "allergies": [{"substance": "Substance X", "reaction": "Rash", "severity": "moderate"}],
        "medications": [
            {"name": "Drug Y", "dose": "5 mg", "route": "oral", "frequency": "once daily"}
        ],
        "observations": [
            {"name": "Body weight", "value": "72.50", "unit": "kg", "date": "2024-05-01"},
            {"name": "Urine dipstick", "value": "negative"},
        ],
        "notes": "Seen in clinic.\n\n\tFollow-up in six weeks.",
    }
    data.update(overrides)
    return data


def clinical_draft(**overrides: Any) -> ClinicalDocumentDraft:
    return ClinicalDocumentDraft.model_validate(draft_data(**overrides))


def put_on_care_team(
    runtime: Runtime, *, clinician_id: uuid.UUID, patient_id: str | uuid.UUID
) -> None:
    """Open ``patient_id``'s record to ``clinician_id``, straight in the database."""
    with runtime.clinical.session() as session:
        session.add(
            CareTeamMember(
                patient_id=uuid.UUID(str(patient_id)),
                clinician_id=clinician_id,
                added_at=utcnow(),
                added_by="pytest",
            )
        )
        session.commit()
