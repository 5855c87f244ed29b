"""Previews and text wait for the malware scanner, and go when it later flags a file.

Runs on both backends with this module's real clamd.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.documents import arrival
from medvault.documents.models import DocumentVersion, ScanState, VersionDerivative
from medvault.processing import kinds
from medvault.processing.clamd import ClamdClient
from medvault.processing.derivation import run_preview_job, run_text_job
from medvault.processing.models import Job
from medvault.processing.scan import run_scan
from medvault.runtime import Runtime
from tests.processing.scanning_world import EICAR_PDF, drain, scanning_backend, version_row
from tests.support.backends import Backend
from tests.support.clamd import EICAR, ClamdServer
from tests.support.factories import create_patient, text_pdf_bytes, upload_raw


@pytest.fixture
def backend(backend: Backend, clamd: ClamdServer) -> Backend:
    return scanning_backend(backend, clamd, "blocking")


def _jobs(runtime: Runtime, *wanted: str) -> list[str]:
    with runtime.clinical.read_session() as session:
        return sorted(session.scalars(select(Job.kind).where(Job.kind.in_(wanted))))


def test_previews_wait_for_the_clean_verdict(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    document = str(upload_raw(client, patient, text_pdf_bytes("Clinic letter")).json()["id"])
    row = version_row(runtime, document)
    # Shown as coming, but no parser job exists until the scanner has spoken.
    assert (row.scan_state, row.preview_state, row.text_state) == (
        ScanState.PENDING,
        "pending",
        "pending",
    )
    assert _jobs(runtime, kinds.PREVIEW, kinds.TEXT) == []
    assert client.get(f"/api/v1/documents/{document}/preview").status_code == 503

    drain(runtime)
    row = version_row(runtime, document)
    assert (row.scan_state, row.preview_state, row.text_state) == (
        ScanState.CLEAN,
        "ready",
        "ready",
    )
    assert client.get(f"/api/v1/documents/{document}/preview").status_code == 200


def test_an_infected_upload_is_never_parsed(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    document = str(upload_raw(client, patient, EICAR_PDF).json()["id"])
    drain(runtime)
    row = version_row(runtime, document)
    assert row.scan_state == ScanState.INFECTED
    assert (row.preview_state, row.text_state) == ("none", "none")
    assert _jobs(runtime, kinds.PREVIEW, kinds.TEXT) == []
    refused = client.get(f"/api/v1/documents/{document}/preview")
    assert refused.status_code == 403
    assert refused.json()["type"].endswith(":quarantined")


def test_a_rescan_that_finds_malware_removes_what_was_derived(
    client: TestClient, runtime: Runtime, clamd: ClamdServer
) -> None:
    # A real PDF with the test signature after its end: pdfium reads it, clamd flags it.
    content = text_pdf_bytes("Referral") + b"\n" + EICAR + b"\n"
    patient = create_patient(client)
    document = str(upload_raw(client, patient, content).json()["id"])
    # As if an older signature database had passed it: clean, previewed, text extracted.
    with runtime.clinical.session() as session:
        row = session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == uuid.UUID(document))
        ).one()
        row.scan_state = ScanState.CLEAN
        arrival.queue_derivation(session, runtime, row)
        session.commit()
        version_id = row.id
    payload = {"version_id": str(version_id)}
    assert run_preview_job(runtime, payload)["outcome"] == "ready"
    assert run_text_job(runtime, payload)["outcome"] == "ready"
    with runtime.clinical.read_session() as session:
        keys = list(session.scalars(select(VersionDerivative.storage_key)))
    assert len(keys) == 3

    assert run_scan(runtime, ClamdClient(clamd.address), payload) == {"outcome": "infected"}
    with runtime.clinical.read_session() as session:
        assert session.scalars(select(VersionDerivative)).first() is None
    assert not any(runtime.blobs.exists(key) for key in keys)
    row = version_row(runtime, document)
    assert (row.preview_state, row.text_state) == ("none", "none")
    # Its words leave the search index: the document is reindexed without its text.
    assert kinds.SEARCH_INDEX in _jobs(runtime, kinds.SEARCH_INDEX)
    assert client.get(f"/api/v1/documents/{document}/preview").status_code == 403
