"""SHA-1 for Attachment.hash: computed during ingest, backfilled by streaming for old versions."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from medvault.cli.app import app as cli
from medvault.documents.models import DocumentVersion
from medvault.fhir.backfill import backfill_sha1
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.fhir.support import sha1_b64
from tests.support.factories import create_patient, pdf_bytes, upload_multipart, upload_raw
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs


def stored_sha1(runtime: Runtime) -> dict[str, str | None]:
    with runtime.clinical.read_session() as session:
        rows = session.execute(select(DocumentVersion.document_id, DocumentVersion.sha1))
        return {str(document_id): sha1 for document_id, sha1 in rows}


def test_every_upload_path_stores_the_sha1(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    # Large enough that the job reads it in several pieces (1 MiB each).
    big, small = pdf_bytes(3 * 1024 * 1024 + 17), pdf_bytes(100)
    raw = upload_raw(fhir, patient, big).json()
    form = upload_multipart(fhir, patient, small).json()
    # Off the upload path: nothing until the jobs ran, then the right hash.
    assert stored_sha1(runtime) == {raw["id"]: None, form["id"]: None}
    assert run_due_jobs(runtime) == 6  # per upload: SHA-1, preview and text
    sha1 = stored_sha1(runtime)
    assert sha1[raw["id"]] == hashlib.sha1(big, usedforsecurity=False).hexdigest()
    assert sha1[form["id"]] == hashlib.sha1(small, usedforsecurity=False).hexdigest()


def test_backfill_streams_old_versions(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    contents = {upload_raw(fhir, patient, c).json()["id"]: c for c in (pdf_bytes(), pdf_bytes())}
    with runtime.clinical.session() as session:
        session.execute(update(DocumentVersion).values(sha1=None))
        session.commit()
    for doc_id in contents:
        resource = fhir.get(f"/fhir/DocumentReference/{doc_id}").json()
        assert "hash" not in resource["content"][0]["attachment"]

    report = backfill_sha1(runtime, batch_size=1)

    assert (report.filled, report.skipped) == (2, 0)
    for doc_id, content in contents.items():
        resource = fhir.get(f"/fhir/DocumentReference/{doc_id}").json()
        assert resource["content"][0]["attachment"]["hash"] == sha1_b64(content)
    assert audit_events(runtime, "document.version.hash_backfill")[-1].details == {
        "filled": 2,
        "skipped": 0,
    }
    assert backfill_sha1(runtime).filled == 0  # nothing left to do


def test_backfill_never_hashes_unverified_bytes(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    doc = upload_raw(fhir, patient, pdf_bytes()).json()
    with runtime.clinical.session() as session:
        # The stored SHA-256 no longer matches the bytes: the content cannot be trusted.
        session.execute(update(DocumentVersion).values(sha1=None, sha256="0" * 64))
        session.commit()
    report = backfill_sha1(runtime)
    assert (report.filled, report.skipped) == (0, 1)
    assert "IntegrityError" in report.failures[0][1]
    assert stored_sha1(runtime)[doc["id"]] is None


def test_the_backfill_command(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    upload_raw(fhir, patient, pdf_bytes())
    with runtime.clinical.session() as session:
        session.execute(update(DocumentVersion).values(sha1=None))
        session.commit()
    result = CliRunner().invoke(cli, ["fhir", "backfill-hashes"], env=server_env(runtime.settings))
    assert result.exit_code == 0, result.output
    assert "filled 1, skipped 0" in result.stdout
    assert None not in stored_sha1(runtime).values()
