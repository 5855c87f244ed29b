"""Memory stays flat: a large upload and download never hold the file in memory.

tracemalloc counts every Python allocation in this process, which here holds the
client, a real uvicorn server and the vault. Peak traced memory must stay far
below the file size. (bench/large_files.py measures the server's RSS as well.)
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.runtime import build_runtime
from tests.support.factories import patient_payload
from tests.support.live_server import LiveServer

MiB = 1024 * 1024
FILE_SIZE = 128 * MiB
PEAK_LIMIT = 24 * MiB


def body(block: bytes, digest: hashlib._Hash) -> Iterator[bytes]:
    for index in range(FILE_SIZE // MiB):
        chunk = (b"%PDF-1.7\n" + block[9:]) if index == 0 else block
        digest.update(chunk)
        yield chunk


@pytest.mark.slow
def test_large_upload_and_download_keep_memory_flat(tmp_path: Path) -> None:
    runtime = build_runtime(
        Settings(env="test", data_dir=tmp_path, max_upload_bytes=FILE_SIZE), run_migrations=True
    )
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="memory").token
        session.commit()
    block = os.urandom(MiB)
    sent = hashlib.sha256()
    with (
        LiveServer(create_app(runtime=runtime)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as http,
    ):
        patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]
        tracemalloc.start()
        try:
            uploaded = http.post(
                "/api/v1/documents",
                params={"patient_id": patient, "document_type": "11502-2", "filename": "big.pdf"},
                content=body(block, sent),
                headers={"content-type": "application/pdf"},
            )
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            received = hashlib.sha256()
            size = 0
            with http.stream("GET", f"/api/v1/documents/{uploaded.json()['id']}/content") as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes():
                    received.update(chunk)
                    size += len(chunk)
            _, download_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    runtime.close()
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["sha256"] == sent.hexdigest()
    assert size == FILE_SIZE and received.hexdigest() == sent.hexdigest()
    assert upload_peak < PEAK_LIMIT, f"upload peak {upload_peak / MiB:.1f} MiB"
    assert download_peak < PEAK_LIMIT, f"download peak {download_peak / MiB:.1f} MiB"
