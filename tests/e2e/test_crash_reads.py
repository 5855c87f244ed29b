"""Crash safety for reads under group commit: SIGKILL the real server mid-downloads.

Reads' audit events share commits (``db.group_commit``): a download streams only after
the batch holding its event committed. The promise to check is the fail-closed one: a
download that delivered its bytes before the power cut has its event in the audit log
after the restart, whatever batch it was in, and the log still verifies. Each request
carries its own ``X-Request-ID``, which the vault records in the event.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import httpx
from sqlalchemy import select

from medvault.audit.models import AuditEvent
from medvault.documents.reading import CONTENT_READ
from medvault.runtime import build_runtime

# The crash tests' backends and their vault (a VaultProcess on each), shared as fixtures.
from tests.e2e.test_crash_safety import CrashBackend, crash_backend, vault  # noqa: F401
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.vault_process import VaultProcess

DOCUMENTS = 12
READERS = 8
SECONDS_BEFORE_KILL = 3.0


def test_sigkill_during_downloads_loses_no_delivered_reads_event(
    vault: VaultProcess,  # noqa: F811
    crash_backend: CrashBackend,  # noqa: F811
) -> None:
    vault.start()
    headers = {"Authorization": f"Bearer {vault.create_token('crash-reads')}"}
    with httpx.Client(base_url=vault.url, headers=headers, timeout=60) as http:
        patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]
        stored: dict[str, str] = {}
        for n in range(DOCUMENTS):
            body = pdf_bytes(8 * 1024 + n)
            created = http.post(
                "/api/v1/documents",
                params={"patient_id": patient, "document_type": "11488-4", "filename": "a.pdf"},
                content=body,
                headers={"Content-Type": "application/pdf"},
            )
            assert created.status_code == 201, created.text
            stored[created.json()["id"]] = hashlib.sha256(body).hexdigest()

    delivered: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def read_until_killed(reader: int) -> None:
        ids = list(stored)
        with httpx.Client(base_url=vault.url, headers=headers, timeout=30) as client:
            n = 0
            while not stop.is_set():
                document_id = ids[(reader + n) % len(ids)]
                request_id = f"crash{reader}x{n}x{uuid.uuid4().hex[:8]}"
                n += 1
                try:
                    response = client.get(
                        f"/api/v1/documents/{document_id}/content",
                        headers={"X-Request-ID": request_id},
                    )
                except httpx.TransportError:
                    continue  # the server died mid-request: nothing was delivered
                with lock:
                    if response.status_code != 200:
                        refused.append(response.status_code)
                    elif hashlib.sha256(response.content).hexdigest() == stored[document_id]:
                        delivered.append(request_id)

    threads = [threading.Thread(target=read_until_killed, args=(r,)) for r in range(READERS)]
    for thread in threads:
        thread.start()
    time.sleep(SECONDS_BEFORE_KILL)
    vault.kill()  # every server process at once, mid-batch
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert len(delivered) > READERS, "too few downloads completed to test anything"
    assert set(refused) <= {503}, refused  # a refused read is a 503, never bytes

    settings = crash_backend.runtime_settings(vault.data_dir)
    runtime = build_runtime(settings)
    try:
        with runtime.clinical.read_session() as session:
            recorded = set(
                session.scalars(
                    select(AuditEvent.request_id).where(
                        AuditEvent.action == CONTENT_READ, AuditEvent.outcome == "success"
                    )
                )
            )
    finally:
        runtime.close()
    missing = [request_id for request_id in delivered if request_id not in recorded]
    assert missing == [], f"{len(missing)} of {len(delivered)} delivered reads unaudited"

    vault.start()  # the restarted vault recovers the log and seals what was committed
    report = json.loads(vault.cli("audit", "verify", "--json"))
    assert report["findings"] == [], report
