"""The scan handler, the reconciler and the seekable plaintext file on stored versions.

Runs on both backends (SQLite + folder, PostgreSQL + S3) with a real clamd.
"""

from __future__ import annotations

import io
import random
import uuid

import pikepdf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.audit.models import AuditEvent
from medvault.documents import repository
from medvault.documents.ingest import storage_key_for
from medvault.documents.models import DocumentVersion, ScanState
from medvault.documents.plaintext_file import PlaintextFile
from medvault.processing.clamd import ClamdClient
from medvault.processing.queue import SafeJobError
from medvault.processing.reconcile import reconcile, record_report
from medvault.processing.scan import run_scan
from medvault.runtime import Runtime
from tests.support.clamd import EICAR, ClamdServer
from tests.support.factories import create_patient, pdf_bytes, upload_raw


def _store(client: TestClient, content: bytes) -> uuid.UUID:
    patient = create_patient(client)
    response = upload_raw(client, patient, content)
    assert response.status_code == 201, response.text
    document_id = uuid.UUID(response.json()["id"])
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]  # Starlette types app as ASGIApp
    with runtime.clinical.read_session() as session:
        version = repository.version(session, document_id, 1)
        assert version is not None
        return version.id


def _version(runtime: Runtime, version_id: uuid.UUID) -> DocumentVersion:
    with runtime.clinical.read_session() as session:
        version = repository.version_by_id(session, version_id)
        assert version is not None
        return version


def test_a_clean_version_becomes_clean(
    runtime: Runtime, client: TestClient, clamd: ClamdServer
) -> None:
    version_id = _store(client, pdf_bytes(300_000))
    outcome = run_scan(runtime, ClamdClient(clamd.address), {"version_id": str(version_id)})
    version = _version(runtime, version_id)
    assert outcome == {"outcome": "clean"}
    assert (version.scan_state, version.scan_signature) == (ScanState.CLEAN, None)
    assert version.scan_engine is not None and version.scan_engine.startswith("ClamAV")


def test_an_infected_version_is_quarantined_with_an_audit_event(
    runtime: Runtime, client: TestClient, clamd: ClamdServer
) -> None:
    version_id = _store(client, b"%PDF-1.7\n" + EICAR + b"\n%%EOF\n")
    outcome = run_scan(runtime, ClamdClient(clamd.address), {"version_id": str(version_id)})
    version = _version(runtime, version_id)
    assert outcome == {"outcome": "infected"}
    assert version.scan_state == ScanState.INFECTED
    assert version.scan_signature == "Medvault.Test.EICAR-Body.UNOFFICIAL"
    with runtime.clinical.read_session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "document.version.quarantined")
        ).all()
    assert [(e.resource_id, e.actor_id, e.outcome) for e in events] == [
        (str(version_id), "system:malware-scan", "failure")
    ]
    assert events[0].patient_id is not None


def test_clamd_down_marks_the_version_failed_and_the_job_retries(
    runtime: Runtime, client: TestClient, clamd: ClamdServer
) -> None:
    version_id = _store(client, pdf_bytes(10_000))
    scanner = ClamdClient(clamd.address, timeout=5)
    clamd.stop()
    try:
        with pytest.raises(SafeJobError, match="unreachable"):
            run_scan(runtime, scanner, {"version_id": str(version_id)})
        assert _version(runtime, version_id).scan_state == ScanState.FAILED
    finally:
        clamd.start()
    assert run_scan(runtime, scanner, {"version_id": str(version_id)}) == {"outcome": "clean"}


def test_a_vanished_version_is_nothing_to_scan(runtime: Runtime, clamd: ClamdServer) -> None:
    outcome = run_scan(runtime, ClamdClient(clamd.address), {"version_id": str(uuid.uuid4())})
    assert outcome == {"outcome": "gone"}


def test_the_plaintext_file_reads_any_range_and_feeds_pikepdf(
    runtime: Runtime, client: TestClient
) -> None:
    pdf = pikepdf.new()
    for _ in range(40):
        pdf.add_blank_page()
    buffer = io.BytesIO()
    pdf.save(buffer)
    content = buffer.getvalue() + b"%" + b"x" * 200_000 + b"\n"
    version_id = _store(client, content)
    with PlaintextFile(runtime, _version(runtime, version_id)) as plain:
        rng = random.Random(3)
        for _ in range(50):
            start = rng.randrange(len(content))
            length = rng.randrange(1, 150_000)
            plain.seek(start)
            assert plain.read(length) == content[start : start + length]
        plain.seek(0)
        assert plain.read() == content
        plain.seek(-6, io.SEEK_END)
        assert plain.read() == b"xxxxx\n"
        plain.seek(0)
        # Buffered, as a parser is handed it: pikepdf wants a BinaryIO.
        assert len(pikepdf.open(io.BufferedReader(plain)).pages) == 40


def test_the_reconciler_removes_old_orphans_only(runtime: Runtime, client: TestClient) -> None:
    kept = _store(client, pdf_bytes(5000))
    orphan_key = storage_key_for(uuid.uuid4())
    writer = runtime.blobs.writer(orphan_key)
    writer.write(b"left by a crash between blob and row")
    writer.commit()
    young = reconcile(runtime, grace_seconds=3600, dry_run=False)
    assert (young.orphan_blobs, young.young_orphans) == (0, 1)
    dry = reconcile(runtime, grace_seconds=0, dry_run=True)
    assert dry.orphan_blobs == 1 and runtime.blobs.exists(orphan_key)
    done = reconcile(runtime, grace_seconds=0)
    record_report(runtime, done, actor="reconcile-test")
    assert done.orphan_blobs == 1 and done.orphan_bytes > 0
    assert not runtime.blobs.exists(orphan_key)
    assert runtime.blobs.exists(_version(runtime, kept).storage_key)
    with runtime.clinical.read_session() as session:
        summary = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "storage.reconcile")
        ).one()
    assert summary.details["orphan_blobs"] == 1
