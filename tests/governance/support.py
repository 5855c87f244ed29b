"""A vault with a record past its retention date, and helpers to look inside it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.documents.models import DocumentVersion, VersionDerivative
from medvault.governance import appraisal
from medvault.runtime import Runtime
from tests.support.factories import create_patient, text_pdf_bytes
from tests.support.jobs import run_due_jobs

# In the title, the description, the file name and the text of the PDF: once the record
# is destroyed, no byte of the vault may still spell it (any case).
MARKER = "Zebraquokka"
# Treatment ended long ago: adult records go 8 years later, so this one is due.
ENDED = date(2012, 3, 1)


@dataclass
class DueRecord:
    patient_id: str
    document_id: str
    version_ids: list[uuid.UUID]


def upload_due_record(client: TestClient, runtime: Runtime, *, versions: int = 1) -> DueRecord:
    """A patient whose treatment ended in 2012, with a text PDF (and its derivatives)."""
    patient_id = create_patient(client, birth_date="1960-04-01")
    response = client.post(
        "/api/v1/documents",
        params={
            "patient_id": patient_id,
            "document_type": "11506-3",
            "filename": f"{MARKER.lower()}-letter.pdf",
            "title": f"Letter about {MARKER}",
            "description": f"{MARKER} follow-up",
        },
        content=text_pdf_bytes(f"The {MARKER} clinic letter"),
        headers={"content-type": "application/pdf"},
    )
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]
    for n in range(2, versions + 1):
        again = client.post(
            f"/api/v1/documents/{document_id}/versions",
            params={"filename": f"{MARKER.lower()}-v{n}.pdf"},
            content=text_pdf_bytes(f"{MARKER} version {n}"),
            headers={"content-type": "application/pdf"},
        )
        assert again.status_code == 201, again.text
    run_due_jobs(runtime)  # previews, text, index, retention
    patched = client.patch(
        f"/api/v1/patients/{patient_id}", json={"treatment_ended_on": ENDED.isoformat()}
    )
    assert patched.status_code == 200, patched.text
    with runtime.clinical.session() as session:
        ids = list(
            session.scalars(
                select(DocumentVersion.id)
                .where(DocumentVersion.document_id == uuid.UUID(document_id))
                .order_by(DocumentVersion.version)
            )
        )
    return DueRecord(patient_id, document_id, ids)


def listed_appraisal(client: TestClient, runtime: Runtime, document_id: str) -> dict[str, Any]:
    """Run the appraisal job and return the entry it listed for ``document_id``."""
    appraisal.run(runtime)
    listed = client.get("/api/v1/governance/appraisals", params={"state": "due"})
    assert listed.status_code == 200, listed.text
    mine = [item for item in listed.json()["items"] if item["document_id"] == document_id]
    assert len(mine) == 1, listed.json()
    return dict(mine[0])


def blob_keys(runtime: Runtime, version_ids: list[uuid.UUID]) -> list[str]:
    """The storage keys of these versions and of everything derived from them."""
    with runtime.clinical.session() as session:
        keys = list(
            session.scalars(
                select(DocumentVersion.storage_key).where(DocumentVersion.id.in_(version_ids))
            )
        )
        keys += session.scalars(
            select(VersionDerivative.storage_key).where(
                VersionDerivative.version_id.in_(version_ids)
            )
        )
    return keys
