"""Destruction at the end of retention: nothing readable is left, and the certificate
in the audit log proves what went. On SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Text, cast, func, or_, select

from medvault.audit.sealer import seal_pending
from medvault.audit.verify import verify_log
from medvault.crypto.envelope import DETACHED_KEK_ID, EnvelopeHeader, EnvelopeReader
from medvault.crypto.errors import KeyringError, UnknownKekError
from medvault.crypto.keyring import DESTROYED_KEK_ID, WrappedDek
from medvault.db.base import ClinicalBase
from medvault.documents import integrity
from medvault.documents.models import DocumentVersion, VersionState
from medvault.documents.rotation import RotationRefusedError, retire_kek, rotate_keys
from medvault.kit.problems import PROBLEM_TYPE_BASE
from medvault.runtime import Runtime
from tests.governance.support import MARKER, blob_keys, listed_appraisal, upload_due_record
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs


def _first_segment(runtime: Runtime, blob: bytes, size: int, wrap: WrappedDek) -> bytes:
    """Decrypt a blob's first segment with the keyring and the given wrap of its key."""
    header = EnvelopeHeader.parse(blob)
    dek = runtime.keyring.unwrap_dek(wrap, version_id=header.version_id)
    reader = EnvelopeReader(dek=dek, header=header, plaintext_size=size)
    span = reader.span(0, min(size, header.segment_size) - 1)
    segment = blob[span.ciphertext_offset : span.ciphertext_offset + span.ciphertext_length]
    return reader.decrypt_segment(0, segment)


def _rows_spelling(runtime: Runtime, word: str) -> list[str]:
    """Tables with a row whose text (any column, any case) contains ``word``."""
    found = []
    with runtime.clinical.session() as session:
        for table in ClinicalBase.metadata.sorted_tables:
            pattern = f"%{word.lower()}%"
            spelled = or_(*(func.lower(cast(column, Text)).like(pattern) for column in table.c))
            matches = select(func.count()).select_from(table).where(spelled)
            if session.scalar(matches):
                found.append(table.name)
    return found


def _files_spelling(root: Path, word: str) -> list[str]:
    needles = (word.encode(), word.lower().encode(), word.upper().encode())
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


@pytest.mark.derivation
def test_destruction_leaves_nothing_readable_and_certifies_what_went(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime, versions=2)
    document = client.get(f"/api/v1/documents/{record.document_id}").json()
    assert document["retention_class"] == "health-record"
    assert document["retain_until"] == "2020-03-01"  # treatment ended 2012-03-01, +8 years
    keys = blob_keys(runtime, record.version_ids)
    assert len(keys) >= 4, "two versions, and a preview or text for each"
    assert _rows_spelling(runtime, MARKER), "the marker is findable before destruction"
    with runtime.clinical.session() as session:
        versions = list(
            session.scalars(
                select(DocumentVersion)
                .where(DocumentVersion.id.in_(record.version_ids))
                .order_by(DocumentVersion.version)
            )
        )
    # A copy of the blob made before destruction (a stray download of the bucket, say):
    # its header carries no wrap of its key, so only the database row's wrap opens it.
    copy = b"".join(runtime.blobs.read(versions[0].storage_key))
    header = EnvelopeHeader.parse(copy)
    assert (header.kek_id, header.wrapped_dek) == (DETACHED_KEK_ID, b"")
    row_wrap = WrappedDek(versions[0].kek_id, versions[0].wrapped_dek)  # as a DB backup has it
    assert _first_segment(runtime, copy, versions[0].size, row_wrap).startswith(b"%PDF")
    with pytest.raises(UnknownKekError):
        _first_segment(runtime, copy, versions[0].size, WrappedDek(header.kek_id, b""))

    entry = listed_appraisal(client, runtime, record.document_id)
    approved = client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/approve",
        json={"reason": "Past retention; no continuing value"},
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "approved"
    run_due_jobs(runtime)

    # The tombstone: metadata replaced, content gone, keys gone.
    tomb = client.get(f"/api/v1/documents/{record.document_id}")
    assert tomb.status_code == 200, tomb.text
    body = tomb.json()
    assert body["title"] == "[destroyed]" and body["destroyed_at"] is not None
    assert body["status"] == "deleted" and body["description"] is None
    assert MARKER.lower() not in str(body).lower()
    content = client.get(f"/api/v1/documents/{record.document_id}/versions/1/content")
    assert content.status_code == 410, content.text
    assert content.json()["type"] == PROBLEM_TYPE_BASE + "document-destroyed"
    with runtime.clinical.session() as session:
        rows = list(
            session.scalars(
                select(DocumentVersion).where(DocumentVersion.id.in_(record.version_ids))
            )
        )
    assert {row.state for row in rows} == {VersionState.DESTROYED}
    assert {row.kek_id for row in rows} == {DESTROYED_KEK_ID}
    assert {row.wrapped_dek for row in rows} == {b""}
    remaining = {blob.key for blob in runtime.blobs.list_blobs()}
    assert not remaining & set(keys), "every version and derivative blob is deleted"

    # No row of the clinical database spells the marker any more (search index included).
    assert _rows_spelling(runtime, MARKER) == []
    if runtime.clinical.is_sqlite:
        # Nor any byte of any file: the databases, their WAL, the blob folder.
        assert _files_spelling(runtime.settings.resolved_data_dir, MARKER) == []
    search = client.get("/api/v1/documents", params={"q": MARKER})
    assert search.status_code == 200 and search.json()["items"] == []

    # The certificate: what, under which rule, approved by whom, and each version's hash.
    (certificate_event,) = audit_events(runtime, "document.destroyed")
    certificate = certificate_event.details["certificate"]
    assert certificate["document_id"] == record.document_id
    assert certificate["retention_class"] == "health-record"
    assert certificate["retain_until"] == "2020-03-01"
    assert "8y after end_of_treatment" in certificate["rule"]
    assert [item["actor"] for item in certificate["approved_by"]] == [
        item["actor"] for item in approved.json()["approvals"]
    ]
    assert [(v["version"], v["sha256"], v["size"]) for v in certificate["versions"]] == [
        (v.version, v.sha256, v.size) for v in versions
    ]
    # `medvault verify --all` passes over the tombstone: nothing missing, nothing corrupt.
    integrity_report = integrity.verify_all(runtime=runtime)
    assert integrity_report.healthy, integrity_report.summary()
    assert integrity_report.missing == 0 and integrity_report.orphans == 0

    # It is in the tamper-evident log: sealed, and the log verifies around it.
    seal_pending(runtime=runtime)
    report = verify_log(runtime=runtime)
    assert report.healthy, report
    sealed = audit_events(runtime, "document.destroyed")[0]
    assert sealed.leaf_index is not None and sealed.leaf_index < report.tree_size

    # The copy is unreadable now: the database holds no wrap of its key any more, and
    # its header never did. A database backup taken before the destruction still holds
    # the row's wrap; that dies when its KEK is retired after a rotation (README
    # "Records governance": what "destroyed" means).
    rotate_keys(runtime=runtime)
    retire_kek(runtime, row_wrap.kek_id, in_flight=timedelta(0))
    with pytest.raises(UnknownKekError):
        _first_segment(runtime, copy, versions[0].size, row_wrap)


def test_a_destroyed_record_cannot_be_restored_or_destroyed_twice(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime)
    entry = listed_appraisal(client, runtime, record.document_id)
    assert client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/approve", json={"reason": "due"}
    ).is_success
    run_due_jobs(runtime)
    restored = client.post(f"/api/v1/documents/{record.document_id}/restore")
    assert restored.status_code == 410, restored.text
    assert restored.json()["type"] == PROBLEM_TYPE_BASE + "document-destroyed"
    again = client.post(
        f"/api/v1/governance/appraisals/{entry['id']}/approve", json={"reason": "again"}
    )
    assert again.status_code == 409
    # The next appraisal does not list the tombstone again.
    listed = client.get("/api/v1/governance/appraisals", params={"state": "due"}).json()
    assert all(item["document_id"] != record.document_id for item in listed["items"])
    # Key rotation passes over destroyed rows instead of failing on their missing keys.
    result = rotate_keys(runtime=runtime)
    assert result.failed == 0


def test_retire_refuses_while_a_row_still_needs_the_kek(
    client: TestClient, runtime: Runtime
) -> None:
    record = upload_due_record(client, runtime)
    old = runtime.keyring.active_id
    # A patient's export waiting for its worker holds its passphrase under this KEK:
    # rotation does not re-wrap such short-lived wraps, so retirement waits for them.
    asked = client.post(
        f"/api/v1/patients/{record.patient_id}/exports", json={"passphrase": "a long passphrase!"}
    )
    assert asked.status_code == 202, asked.text
    with pytest.raises(KeyringError, match="active"):
        retire_kek(runtime, old, in_flight=timedelta(0))
    # A rotation that could not re-wrap leaves rows on the old KEK: retiring must wait.
    runtime.settings.keyring_path.write_text(runtime.keyring.with_new_active_kek().to_json())
    runtime.reload_keyring()
    with pytest.raises(RotationRefusedError, match="still wrapped"):
        retire_kek(runtime, old, in_flight=timedelta(0))
    rotate_keys(runtime=runtime, rewrap_only=True)
    with pytest.raises(RotationRefusedError, match="1 data keys are still wrapped"):
        retire_kek(runtime, old, in_flight=timedelta(0))
    seal_pending(runtime=runtime)
    run_due_jobs(runtime)  # builds the export (under the new KEK) and erases the passphrase
    # Just after a rotation, uploads begun under the old KEK may still commit.
    with pytest.raises(RotationRefusedError, match="may still commit"):
        retire_kek(runtime, old)
    retire_kek(runtime, old, in_flight=timedelta(0))
    assert old not in runtime.keyring.kek_ids
    (event,) = audit_events(runtime, "keys.kek.retire")
    assert event.resource_id == old
