"""The reconciler against live uploads and against what SIGKILLed uploads leave behind.

The design (``processing/reconcile.py``) lets the reconciler delete only blobs older
than its grace period, and makes uploads commit within half of it. So the first test
runs it, with the default grace, over and over while uploads stream in, and checks
that every committed version is intact. The second runs the crash harness of
``tests/e2e`` (SIGKILL during an upload storm), stops the vault, and then reconciles
with no grace at all (nothing can be in flight): the leftovers go, the versions stay.
"""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from medvault.documents.ingest import storage_key_for
from medvault.documents.integrity import Outcome, check_version, find_orphans
from medvault.documents.models import DocumentVersion
from medvault.processing.reconcile import ReconcileReport, reconcile
from medvault.runtime import Runtime
from medvault.storage.s3 import S3BlobStore
from tests.cli.server_env import server_env
from tests.e2e.upload_storm import UploadStorm
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.inspect import stored_state
from tests.support.live_server import LiveServer
from tests.support.vault_process import VaultProcess

UPLOADS = 40
UPLOADERS = 4
STORM_SEED = 20240612


def versions(runtime: Runtime) -> list[DocumentVersion]:
    with runtime.clinical.read_session() as session:
        return list(session.scalars(select(DocumentVersion)))


def assert_intact(runtime: Runtime, expected: int) -> None:
    """Every committed version has its blob, and it decrypts to its recorded SHA-256."""
    stored = versions(runtime)
    assert len(stored) == expected
    broken = [
        (str(v.id), check.outcome.value)
        for v in stored
        if (check := check_version(runtime=runtime, version=v)).outcome is not Outcome.OK
    ]
    assert broken == [], f"committed versions damaged by the reconciler: {broken}"


def test_the_reconciler_never_touches_a_committed_upload_while_uploads_stream_in(
    runtime: Runtime, app: FastAPI, api_token: str
) -> None:
    grace = runtime.settings.reconcile_grace_seconds
    rng = random.Random(11)
    bodies = [pdf_bytes(rng.randint(2_000, 1_500_000)) for _ in range(UPLOADS)]
    accepted: list[str] = []
    failures: list[str] = []
    reports: list[ReconcileReport] = []
    uploads_done = threading.Event()
    lock = threading.Lock()

    with LiveServer(app) as live:
        headers = {"Authorization": f"Bearer {api_token}"}
        with httpx.Client(base_url=live.url, headers=headers, timeout=60) as http:
            patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]

        def upload(share: list[bytes]) -> None:
            with httpx.Client(base_url=live.url, headers=headers, timeout=60) as http:
                for body in share:
                    response = http.post(
                        "/api/v1/documents",
                        params={"patient_id": patient, "document_type": "11502-2"},
                        content=body,
                        headers={"content-type": "application/pdf"},
                    )
                    with lock:
                        if response.status_code == 201:
                            accepted.append(response.json()["id"])
                        else:
                            failures.append(f"{response.status_code} {response.text[:200]}")

        def reconcile_repeatedly() -> None:
            while True:
                reports.append(reconcile(runtime, grace_seconds=grace))
                if uploads_done.is_set():
                    return

        uploaders = [
            threading.Thread(target=upload, args=(bodies[n::UPLOADERS],)) for n in range(UPLOADERS)
        ]
        reconciler = threading.Thread(target=reconcile_repeatedly)
        reconciler.start()
        for thread in uploaders:
            thread.start()
        for thread in uploaders:
            thread.join()
        uploads_done.set()
        reconciler.join()

    assert failures == []
    assert len(accepted) == UPLOADS
    assert len(reports) >= 2  # it really ran beside the uploads, and once after them
    assert [r.orphan_blobs for r in reports] == [0] * len(reports)
    assert_intact(runtime, UPLOADS)
    assert list(find_orphans(runtime=runtime)) == []


def _plant_leftovers(runtime: Runtime) -> str:
    """One orphan blob and one unfinished write, through the store itself.

    A SIGKILL does not always land between a blob and its row, so these make sure the
    reconciler has leftovers of both kinds to remove, whatever the storm left.
    """
    store = runtime.blobs
    orphan = storage_key_for(uuid.uuid4())
    writer = store.writer(orphan)
    writer.write(b"committed blob, row never written")
    writer.commit()
    unfinished = store.writer(storage_key_for(uuid.uuid4()))
    # On S3 a whole part goes out as a multipart upload; on a folder, a temp file.
    unfinished.write(b"\0" * (store.part_size if isinstance(store, S3BlobStore) else 4096))
    return orphan


@pytest.mark.slow
def test_after_sigkilled_uploads_the_reconciler_removes_leftovers_and_keeps_versions(
    runtime: Runtime, tmp_path: Path
) -> None:
    settings = runtime.settings
    vault = VaultProcess(
        settings.resolved_data_dir,
        log_path=tmp_path / "server.log",
        env=server_env(settings),
    )
    try:
        token = vault.create_token("storm")
        vault.start()
        with httpx.Client(base_url=vault.url, headers={"Authorization": f"Bearer {token}"}) as http:
            created = http.post("/api/v1/patients", json=patient_payload())
            assert created.status_code == 201, created.text
        storm = UploadStorm(
            vault,
            token=token,
            patient_id=created.json()["id"],
            seed=STORM_SEED,
            uploads=UPLOADS,
            clients=UPLOADERS,
            kills=2,
        )
        result = storm.run()
        assert result.killer_error is None, result.killer_error
        assert len(result.kills) == 2
    finally:
        vault.stop()

    # Planted only now: the vault's own reconcile job must not see them first (moto
    # reports every multipart upload as initiated in 2010, so it would abort this one).
    planted_orphan = _plant_leftovers(runtime)
    # The vault is down: nothing is in flight, so no grace is needed.
    committed = len(versions(runtime))
    orphans = {o.blob.key for o in find_orphans(runtime=runtime)}
    partial = stored_state(runtime).partial_uploads
    assert planted_orphan in orphans and partial >= 1
    assert committed >= len(result.acknowledged) > 0

    report = reconcile(runtime, grace_seconds=0)

    assert (report.orphan_blobs, report.incomplete_writes) == (len(orphans), partial)
    assert list(find_orphans(runtime=runtime)) == []
    assert stored_state(runtime).partial_uploads == 0
    assert not runtime.blobs.exists(planted_orphan)
    assert_intact(runtime, committed)
    acknowledged = {uuid.UUID(ack.document_id) for ack in result.acknowledged}
    assert acknowledged <= {v.document_id for v in versions(runtime)}
