"""No blob the vault writes carries a wrap of its key: only database rows do, so a record's
destruction (which deletes the rows' wraps) leaves no copy that the keyring alone opens.
SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medvault.audit.sealer import seal_pending
from medvault.crypto.envelope import DETACHED_KEK_ID, MAX_HEADER_BYTES, EnvelopeHeader
from medvault.runtime import Runtime
from tests.support.factories import create_patient, png_bytes, text_pdf_bytes, upload_raw
from tests.support.jobs import run_due_jobs


@pytest.mark.derivation
def test_every_blob_written_has_a_detached_header(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    assert upload_raw(client, patient, text_pdf_bytes("Detached")).status_code == 201
    picture = upload_raw(client, patient, png_bytes(), filename="x.png", content_type="image/png")
    assert picture.status_code == 201
    asked = client.post(
        f"/api/v1/patients/{patient}/exports", json={"passphrase": "a long passphrase!"}
    )
    assert asked.status_code == 202
    seal_pending(runtime=runtime)
    run_due_jobs(runtime)  # previews, text, the export archive
    prefixes = set()
    for blob in runtime.blobs.list_blobs():
        head = b"".join(runtime.blobs.read(blob.key, offset=0, length=MAX_HEADER_BYTES))
        header = EnvelopeHeader.parse(head)
        assert (header.kek_id, header.wrapped_dek) == (DETACHED_KEK_ID, b""), blob.key
        prefixes.add(blob.key.split("/", 1)[0])
    # Versions, their derivatives and the export were all looked at.
    assert {"derived", "exports"} <= prefixes and len(prefixes) >= 3, prefixes
