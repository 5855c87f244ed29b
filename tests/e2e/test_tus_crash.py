"""SIGKILL a vault in the middle of a resumable upload's request, then finish the
upload on a second vault that shares the database and the blob store.

The promise: the offset the survivors report is one the killed process had made
durable (never ahead of the stored bytes), the client resumes from HEAD, and the
document's bytes and SHA-256 are exactly the file's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

# The crash tests' backends (SQLite + folder, PostgreSQL + S3 over HTTP), as fixtures.
from tests.e2e.test_crash_safety import CrashBackend, crash_backend  # noqa: F401
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.vault_process import VaultProcess
from tests.uploads.support import TUS, metadata

MiB = 1024 * 1024
SIZE = 24 * MiB
LOCK_SECONDS = 2


def slowly(data: bytes, piece: int = 256 * 1024, pause: float = 0.02) -> Iterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        time.sleep(pause)


def test_sigkill_mid_request_then_resume_on_another_instance(
    crash_backend: CrashBackend,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = {
        **crash_backend.env(),
        "MEDVAULT_UPLOAD_LOCK_SECONDS": str(LOCK_SECONDS),
        "MEDVAULT_UPLOAD_CHECKPOINT_BYTES": str(MiB),
        "MEDVAULT_SERVER_WORKERS": "1",
    }
    data_dir = tmp_path / "data"  # shared: one keyring, one SQLite file, one blob folder
    first = VaultProcess(data_dir, log_path=tmp_path / "first.log", env=env)
    second = VaultProcess(data_dir, log_path=tmp_path / "second.log", env=env)
    try:
        first.start()
        second.start()
        auth = {"Authorization": f"Bearer {first.create_token('tus-crash')}"}
        data = pdf_bytes(SIZE)
        with (
            httpx.Client(base_url=first.url, headers=auth, timeout=60) as one,
            httpx.Client(base_url=second.url, headers=auth, timeout=60) as two,
        ):
            patient = one.post("/api/v1/patients", json=patient_payload()).json()["id"]
            created = one.post(
                "/api/v1/uploads",
                headers={
                    **TUS,
                    "Upload-Length": str(SIZE),
                    "Upload-Metadata": metadata(
                        patient_id=patient, document_type="11502-2", filename="scan.pdf"
                    ),
                },
            )
            assert created.status_code == 201, created.text
            url = created.headers["Location"]
            outcome: list[BaseException | int] = []

            def send() -> None:
                try:
                    answer = one.patch(
                        url,
                        headers={
                            **TUS,
                            "Upload-Offset": "0",
                            "Content-Type": "application/offset+octet-stream",
                            "Content-Length": str(SIZE),
                        },
                        content=slowly(data),
                    )
                    outcome.append(answer.status_code)
                except httpx.HTTPError as exc:
                    outcome.append(exc)

            sender = threading.Thread(target=send)
            sender.start()
            # Kill once the first vault has recorded a few MiB: mid-request, mid-chunk.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                offset = int(two.head(url, headers=TUS).headers["Upload-Offset"])
                if offset >= 4 * MiB:
                    break
                time.sleep(0.05)
            first.kill()
            sender.join(timeout=30)
            assert outcome and not isinstance(outcome[0], int), outcome  # it never finished

            stood = int(two.head(url, headers=TUS).headers["Upload-Offset"])
            assert 4 * MiB <= stood < SIZE
            # The killed request's lease runs out; until then the second vault says 423,
            # which tus clients retry.
            deadline = time.monotonic() + LOCK_SECONDS * 10
            while True:
                resumed = two.patch(
                    url,
                    headers={
                        **TUS,
                        "Upload-Offset": str(stood),
                        "Content-Type": "application/offset+octet-stream",
                    },
                    content=data[stood:],
                )
                if resumed.status_code != 423 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert resumed.status_code == 204, resumed.text
            document = resumed.headers["Medvault-Document-Id"]
            stored = two.get(f"/api/v1/documents/{document}/content")
            assert hashlib.sha256(stored.content).hexdigest() == hashlib.sha256(data).hexdigest()
            assert stored.headers["ETag"].strip('"') == hashlib.sha256(data).hexdigest()
    finally:
        first.stop()
        second.stop()
