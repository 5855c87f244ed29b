"""The reconciler's part in resumable uploads: expired uploads, their chunks, writes a
killed request left open (S3 multipart uploads, temp files), and unlisted chunks."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from medvault.kit.clock import utcnow
from medvault.processing.reconcile import reconcile
from medvault.runtime import Runtime
from medvault.storage.s3 import S3BlobStore
from medvault.uploads.models import Upload
from medvault.uploads.staging import upload_prefix
from tests.support.factories import create_patient, pdf_bytes
from tests.uploads.support import create, head, patch

MiB = 1024 * 1024


def open_writes(runtime: Runtime, prefix: str) -> int:
    """Writes under ``prefix`` that never finished (what a SIGKILL leaves behind)."""
    return runtime.blobs.sweep_incomplete(older_than_seconds=0, dry_run=True, prefix=prefix)


def test_expiry_removes_chunks_and_aborts_what_a_killed_request_left_open(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    data = pdf_bytes(200_000)
    url = create(client, patient, len(data)).headers["Location"]
    assert patch(client, url, 0, data[:100_000]).status_code == 204
    upload_id = uuid.UUID(url.rsplit("/", 1)[1])
    prefix = upload_prefix(upload_id)
    # A request killed mid-chunk: its write never committed nor aborted. On S3 the
    # writer has started a multipart upload once a part's worth (8 MiB) is in.
    stranded = runtime.blobs.writer(f"{prefix}{uuid.uuid4()}")
    stranded.write(b"\x00" * (9 * MiB))
    assert open_writes(runtime, prefix) == 1
    other = create(client, patient, len(data)).headers["Location"]  # not expired: kept
    assert patch(client, other, 0, data[:50_000]).status_code == 204
    with runtime.clinical.session() as session:
        past = utcnow() - timedelta(seconds=5)
        session.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=past))
        session.commit()

    report = reconcile(runtime, grace_seconds=3600)
    assert report.expired_uploads == 1
    assert open_writes(runtime, prefix) == 0
    assert list(runtime.blobs.list_blobs(prefix)) == []
    if isinstance(runtime.blobs, S3BlobStore):
        store = runtime.blobs
        listed = store.client.list_multipart_uploads(
            Bucket=store.bucket, Prefix=store.object_key(prefix)
        )
        assert listed.get("Uploads", []) == []
    assert head(client, url).status_code == 404
    assert head(client, other).headers["Upload-Offset"] == "50000"


def test_finished_uploads_are_forgotten_after_expiry(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(20_000)
    created = create(client, patient, len(data), content=data)
    document = created.headers["Medvault-Document-Id"]
    upload_id = uuid.UUID(created.headers["Location"].rsplit("/", 1)[1])
    with runtime.clinical.session() as session:
        past = utcnow() - timedelta(seconds=5)
        session.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=past))
        session.commit()
    report = reconcile(runtime, grace_seconds=3600)
    assert (report.finished_uploads, report.expired_uploads) == (1, 0)
    assert head(client, created.headers["Location"]).status_code == 404
    assert client.get(f"/api/v1/documents/{document}").status_code == 200  # the document stays


def test_unlisted_chunks_go_after_the_grace_period(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(50_000)
    url = create(client, patient, len(data)).headers["Location"]
    assert patch(client, url, 0, data[:10_000]).status_code == 204
    upload_id = uuid.UUID(url.rsplit("/", 1)[1])
    # Sealed by a request that died before recording it.
    orphan = f"{upload_prefix(upload_id)}{uuid.uuid4()}"
    writer = runtime.blobs.writer(orphan)
    writer.write(b"ciphertext")
    writer.commit()
    young = reconcile(runtime, grace_seconds=3600)
    assert runtime.blobs.exists(orphan)
    assert young.orphan_blobs == 0
    reconcile(runtime, grace_seconds=0)
    assert not runtime.blobs.exists(orphan)
    # The recorded chunk stays, and the upload goes on.
    assert patch(client, url, 10_000, data[10_000:]).status_code == 204
