"""Crash safety for uploads under group commit: SIGKILL the real server mid-batches.

Concurrent uploads share commits (``db.group_commit``): each runs in its own savepoint
of a shared transaction, and its 201 leaves only after that transaction committed.
Many small uploads at once make those batches real; the test waits until the server's
own metrics show batches holding several uploads, then kills every server process at
once. After the restart, every acknowledged upload must read back byte for byte, and
no row may lack its blob or its audit event, whatever batch it was in.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time

import httpx

# The crash tests' backends and their vault (a VaultProcess on each), shared as fixtures.
from tests.e2e.test_crash_safety import (  # noqa: F401
    CrashBackend,
    audit_storage,
    crash_backend,
    read_back,
    vault,
)
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.vault_process import VaultProcess

UPLOADERS = 16
PATIENTS = 4
SIZE = 10 * 1024
# Batches must have formed, and uploads come back, by then; here both take a second or two.
SHARED_BATCHES_WITHIN_SECONDS = 60.0
SHARED_BATCHES_WANTED = 3
ACKNOWLEDGED_WANTED = 4 * UPLOADERS


def _shared_batches(http: httpx.Client) -> int:
    """Committed batches that held more than one upload, from GET /metrics (all processes)."""
    text = http.get("/metrics").text
    total = re.search(r"^medvault_group_commit_units_count\s+(\S+)$", text, re.M)
    lone = re.search(r'^medvault_group_commit_units_bucket\{le="1\.0"\}\s+(\S+)$', text, re.M)
    if total is None or lone is None:
        return 0
    return int(float(total.group(1)) - float(lone.group(1)))


def test_sigkill_during_batched_uploads_loses_no_acknowledged_document(
    vault: VaultProcess,  # noqa: F811
    crash_backend: CrashBackend,  # noqa: F811
) -> None:
    # One token uploads for every client here: lift the per-principal upload limit.
    vault.env["MEDVAULT_UPLOAD_RATE_LIMIT"] = "1000000/minute"
    vault.start()
    headers = {"Authorization": f"Bearer {vault.create_token('crash-batches')}"}
    with httpx.Client(base_url=vault.url, headers=headers, timeout=60) as http:
        patients = [
            http.post("/api/v1/patients", json=patient_payload()).json()["id"]
            for _ in range(PATIENTS)
        ]

    acknowledged: dict[str, str] = {}
    sent: dict[str, int] = {}
    unexpected: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def upload_until_killed(uploader: int) -> None:
        with httpx.Client(base_url=vault.url, headers=headers, timeout=30) as client:
            while not stop.is_set():
                body = pdf_bytes(SIZE)
                sha = hashlib.sha256(body).hexdigest()
                with lock:
                    sent[sha] = len(body)
                try:
                    response = client.post(
                        "/api/v1/documents",
                        params={
                            "patient_id": patients[uploader % PATIENTS],
                            "document_type": "11488-4",
                            "filename": "letter.pdf",
                        },
                        content=body,
                        headers={"Content-Type": "application/pdf"},
                    )
                except httpx.TransportError:
                    continue  # the server died mid-request: not acknowledged
                with lock:
                    if response.status_code == 201 and response.json()["sha256"] == sha:
                        acknowledged[response.json()["id"]] = sha
                    elif not stop.is_set():
                        unexpected.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=upload_until_killed, args=(n,)) for n in range(UPLOADERS)]
    for thread in threads:
        thread.start()

    def enough_done() -> bool:
        with lock:
            return len(acknowledged) >= ACKNOWLEDGED_WANTED

    # Kill only once batches were shared and enough uploads were acknowledged: under a
    # loaded CI machine the batches can form before many 201s have come back.
    shared = 0
    deadline = time.monotonic() + SHARED_BATCHES_WITHIN_SECONDS
    with httpx.Client(base_url=vault.url, headers=headers, timeout=30) as http:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            shared = _shared_batches(http)
            if shared >= SHARED_BATCHES_WANTED and enough_done():
                break
    vault.kill()  # every server process at once, in the middle of the batches
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert shared >= SHARED_BATCHES_WANTED, f"uploads never shared a commit ({shared})"
    assert unexpected == [], unexpected
    assert len(acknowledged) > UPLOADERS, "too few uploads completed to test anything"

    storage = audit_storage(crash_backend.runtime_settings(vault.data_dir), sent)
    assert storage.rows_without_blob == [], storage.rows_without_blob
    assert storage.documents_without_audit_event == [], storage.documents_without_audit_event
    assert storage.rows_with_unknown_content == [], storage.rows_with_unknown_content
    assert all(v == "ok" for v in storage.sqlite_integrity.values()), storage.sqlite_integrity
    missing = sorted(set(acknowledged) - set(storage.rows))
    assert missing == [], f"acknowledged uploads have no row: {missing}"

    vault.start()
    with httpx.Client(base_url=vault.url, headers=headers, timeout=60) as http:
        assert read_back(http, acknowledged) == []
