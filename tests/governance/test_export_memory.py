"""An export of a large record keeps memory flat: the archive is built and served in
pieces, never whole (SQLite + filesystem; the S3 path streams through the same writer)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medvault.app import create_app
from medvault.audit.sealer import seal_pending
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.governance.export_verifier import verify
from medvault.runtime import build_runtime
from tests.support.factories import patient_payload
from tests.support.jobs import run_due_jobs
from tests.support.live_server import LiveServer

MiB = 1024 * 1024
FILE_SIZE = 96 * MiB
PEAK_LIMIT = 24 * MiB
PASSPHRASE = "granite meadow kettle forty"


def _body(block: bytes, digest: hashlib._Hash) -> Iterator[bytes]:
    for index in range(FILE_SIZE // MiB):
        chunk = (b"%PDF-1.7\n" + block[9:]) if index == 0 else block
        digest.update(chunk)
        yield chunk


@pytest.mark.slow
def test_exporting_a_large_record_keeps_memory_flat(tmp_path: Path) -> None:
    runtime = build_runtime(
        Settings(env="test", data_dir=tmp_path / "data", max_upload_bytes=FILE_SIZE),
        run_migrations=True,
    )
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="memory").token
        session.commit()
    block = os.urandom(MiB)
    sent = hashlib.sha256()
    archive = tmp_path / "export.zip"
    with (
        LiveServer(create_app(runtime=runtime)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as http,
    ):
        patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]
        uploaded = http.post(
            "/api/v1/documents",
            params={"patient_id": patient, "document_type": "11502-2", "filename": "big.pdf"},
            content=_body(block, sent),
            headers={"Content-Type": "application/pdf"},
        )
        assert uploaded.status_code == 201, uploaded.text
        run_due_jobs(runtime)
        asked = http.post(f"/api/v1/patients/{patient}/exports", json={"passphrase": PASSPHRASE})
        assert asked.status_code == 202, asked.text
        seal_pending(runtime=runtime)
        tracemalloc.start()
        try:
            run_due_jobs(runtime)  # builds the archive: 96 MiB read, zipped, sealed
            status = http.get(asked.headers["location"]).json()
            assert status["state"] == "ready", status
            with httpx.stream("GET", status["download_url"], timeout=300) as response:
                assert response.status_code == 200
                with archive.open("wb") as out:
                    for piece in response.iter_bytes():
                        out.write(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    runtime.close()
    assert archive.stat().st_size > FILE_SIZE
    assert peak < PEAK_LIMIT, f"peak {peak / MiB:.1f} MiB for a {FILE_SIZE // MiB} MiB record"
    report = verify(archive, PASSPHRASE)
    assert report.ok, report.problems
