"""Crash safety: SIGKILL the real server during 100 uploads, then audit what is left.

The acceptance point: every document the API acknowledged reads back with the right
SHA-256, no row points at a missing blob, and orphan blobs are counted and reported.
Orphan blobs and temp files are the documented crash window (ARCHITECTURE.md,
"Upload: the order that makes crashes safe") and are allowed; a row without its
blob would be data loss and fails the test.

Reproduce a run with ``MEDVAULT_CRASH_SEED=<seed>`` (the seed is in the report).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from medvault.audit.models import AuditEvent
from medvault.config import Settings
from medvault.documents.models import DocumentVersion
from medvault.runtime import build_runtime
from medvault.storage.filesystem import TEMP_DIR, FilesystemBlobStore
from medvault.storage.s3 import S3BlobStore
from tests.e2e.upload_storm import MiB, StormResult, UploadStorm
from tests.support.factories import patient_payload
from tests.support.services import unavailable
from tests.support.vault_process import VaultProcess

SEED = int(os.environ.get("MEDVAULT_CRASH_SEED", "20240611"))
# 100 uploads and 3-4 kills keep the suite inside its CI budget; a soak raises them,
# e.g. ``MEDVAULT_CRASH_UPLOADS=2000 pytest tests/e2e/test_crash_safety.py`` (bench/README).
UPLOADS = int(os.environ.get("MEDVAULT_CRASH_UPLOADS", "100"))
CLIENTS = 4
BUCKET = "medvault-test"  # created by the session ``s3`` fixture
S3_PART_SIZE = 5 * MiB  # the minimum, so the largest uploads go out as S3 multipart


@dataclass
class CrashBackend:
    name: str
    settings: dict[str, Any]  # Settings fields beyond data_dir, shared by server and checks

    def env(self) -> dict[str, str]:
        env = {f"MEDVAULT_{key.upper()}": str(value) for key, value in self.settings.items()}
        if self.name == "pg-s3":
            env.update(
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION="us-east-1",
            )
        return env

    def runtime_settings(self, data_dir: Path) -> Settings:
        return Settings(env="test", data_dir=data_dir, **self.settings)


@pytest.fixture(params=["sqlite-fs", "pg-s3"])
def crash_backend(request: pytest.FixtureRequest) -> CrashBackend:
    if request.param == "sqlite-fs":
        return CrashBackend("sqlite-fs", {})
    # Looked up lazily so the SQLite run neither needs nor starts these services.
    databases = request.getfixturevalue("pg_databases")
    if databases is None:
        unavailable("PostgreSQL on 127.0.0.1:5432 is not reachable")
    s3 = request.getfixturevalue("s3")
    if s3 is None:
        unavailable("the moto S3 server could not be started")
    run = uuid.uuid4().hex[:8]
    return CrashBackend(
        "pg-s3",
        {
            "database_url": databases.create(f"crash_{run}_clinical"),
            "auth_database_url": databases.create(f"crash_{run}_auth"),
            "patient_database_url": databases.create(f"crash_{run}_patients"),
            "storage_url": f"s3://{BUCKET}/crash-{run}",
            "s3_endpoint_url": s3.endpoint_url,
            "s3_region": "us-east-1",
            "s3_part_size": S3_PART_SIZE,
        },
    )


@pytest.fixture
def vault(crash_backend: CrashBackend, tmp_path: Path) -> Iterator[VaultProcess]:
    process = VaultProcess(
        tmp_path / "data", log_path=tmp_path / "server.log", env=crash_backend.env()
    )
    try:
        yield process
    finally:
        process.stop()


# -- looking behind the API -------------------------------------------------------------


@dataclass
class StorageAudit:
    versions: int = 0
    rows_without_blob: list[str] = field(default_factory=list)
    documents_without_blob: set[str] = field(default_factory=set)
    rows_with_unknown_content: list[str] = field(default_factory=list)
    documents_without_audit_event: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    sqlite_integrity: dict[str, str] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # document id -> sha256


def audit_storage(settings: Settings, sent: dict[str, int]) -> StorageAudit:
    """Compare rows against blobs directly, with the server stopped."""
    report = StorageAudit()
    runtime = build_runtime(settings)
    try:
        for name, database in (("clinical", runtime.clinical), ("auth", runtime.auth)):
            if database.is_sqlite:
                with database.engine.connect() as conn:
                    report.sqlite_integrity[name] = str(
                        conn.execute(text("PRAGMA integrity_check")).scalar()
                    )
        with runtime.clinical.session() as session:
            versions = session.execute(
                select(
                    DocumentVersion.document_id, DocumentVersion.storage_key, DocumentVersion.sha256
                )
            ).all()
            audited = set(
                session.scalars(
                    select(AuditEvent.resource_id).where(AuditEvent.action == "document.create")
                )
            )
        blobs = {info.key for info in runtime.blobs.list_blobs()}
        report.versions = len(versions)
        for document_id, key, sha in versions:
            report.rows[str(document_id)] = sha
            if key not in blobs and not runtime.blobs.exists(key):
                report.rows_without_blob.append(f"document {document_id}: blob {key}")
                report.documents_without_blob.add(str(document_id))
            if sha not in sent:
                report.rows_with_unknown_content.append(f"document {document_id}: {sha}")
            if str(document_id) not in audited:
                report.documents_without_audit_event.append(str(document_id))
        report.orphan_blobs = sorted(blobs - {key for _, key, _ in versions})
        report.temp_files = _leftover_partials(runtime.blobs)
    finally:
        runtime.close()
    return report


def _leftover_partials(store: object) -> list[str]:
    """Temp files (filesystem) or incomplete multipart uploads (S3) left by killed writers."""
    if isinstance(store, FilesystemBlobStore):
        return sorted(
            f"{TEMP_DIR}/{p.name} ({p.stat().st_size} B)" for p in (store.root / TEMP_DIR).iterdir()
        )
    if isinstance(store, S3BlobStore):
        listed = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=f"{store.prefix}/")
        return sorted(f"multipart {u['Key']} ({u['UploadId']})" for u in listed.get("Uploads", []))
    return []


def read_back(http: httpx.Client, expected: dict[str, str]) -> list[str]:
    """GET metadata and content of each document; return what does not match."""
    failures = []
    for document_id, sha in sorted(expected.items()):
        meta = http.get(f"/api/v1/documents/{document_id}")
        if meta.status_code != 200 or meta.json().get("sha256") != sha:
            failures.append(f"{document_id}: metadata HTTP {meta.status_code} {meta.text[:200]}")
            continue
        content = http.get(f"/api/v1/documents/{document_id}/content")
        got = hashlib.sha256(content.content).hexdigest()
        if content.status_code != 200 or got != sha:
            failures.append(
                f"{document_id}: content HTTP {content.status_code}, sha256 {got} != {sha}"
            )
    return failures


# -- the test ----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_during_uploads_loses_no_acknowledged_document(
    crash_backend: CrashBackend,
    vault: VaultProcess,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    token = vault.create_token("crash")
    vault.start()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=vault.url, headers=auth, timeout=30) as http:
        created = http.post("/api/v1/patients", json=patient_payload())
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]

    kills = random.Random(SEED).randint(3, 4) * max(1, UPLOADS // 100)
    storm = UploadStorm(
        vault,
        token=token,
        patient_id=patient_id,
        seed=SEED,
        uploads=UPLOADS,
        clients=CLIENTS,
        kills=kills,
    )
    result = storm.run()
    if result.killer_error is not None:
        pytest.fail(f"the server did not come back after a SIGKILL: {result.killer_error}")

    # A clean stop, then the checks behind the API while nothing writes.
    vault.stop()
    settings = crash_backend.runtime_settings(vault.data_dir)
    storage = audit_storage(settings, result.sent)

    # A clean restart, then everything back through the API.
    started = time.monotonic()
    vault.start()
    restart_seconds = time.monotonic() - started
    acknowledged = {ack.document_id: ack.sha256 for ack in result.acknowledged}
    # Rows already known to lack their blob are failures; reading them only costs time.
    readable = {d: s for d, s in storage.rows.items() if d not in storage.documents_without_blob}
    with httpx.Client(base_url=vault.url, headers=auth, timeout=60) as http:
        ack_failures = read_back(http, {d: s for d, s in acknowledged.items() if d in readable})
        row_failures = read_back(http, {d: s for d, s in readable.items() if d not in acknowledged})
    vault.stop()

    summary = _summarise(crash_backend.name, result, storage, restart_seconds, vault)
    _report(summary, record_property, tmp_path)

    assert not storage.rows_without_blob, (
        f"rows point at missing blobs: {storage.rows_without_blob}"
    )
    assert not ack_failures, f"acknowledged documents do not read back: {ack_failures}"
    assert not row_failures, f"committed rows do not read back: {row_failures}"
    assert not result.unexpected, f"unexpected responses: {result.unexpected}"
    assert not storage.rows_with_unknown_content, storage.rows_with_unknown_content
    assert not storage.documents_without_audit_event, storage.documents_without_audit_event
    assert all(v == "ok" for v in storage.sqlite_integrity.values()), storage.sqlite_integrity
    missing = set(acknowledged) - set(storage.rows)
    assert not missing, f"acknowledged documents have no row: {sorted(missing)}"
    per_payload = Counter(storage.rows.values())
    assert max(per_payload.values(), default=1) == 1, "a retried upload was stored twice"
    # Not vacuous: most uploads got through, and kills really hit uploads in flight.
    assert len(acknowledged) > UPLOADS // 2, summary
    assert sum(1 for kill in result.kills if kill.in_flight > 0) >= 2, summary


def _summarise(
    backend: str,
    result: StormResult,
    storage: StorageAudit,
    restart_seconds: float,
    vault: VaultProcess,
) -> dict[str, Any]:
    via = Counter(ack.via for ack in result.acknowledged)
    return {
        "backend": backend,
        "seed": SEED,
        "uploads_planned": UPLOADS,
        "acknowledged": len(result.acknowledged),
        "acknowledged_first_time_201": via["201"],
        "acknowledged_by_409_after_lost_response": via["409"],
        "never_acknowledged": result.gave_up,
        "interrupted_requests": result.interrupted_requests,
        "kills": [asdict(kill) for kill in result.kills],
        "kills_with_uploads_in_flight": sum(1 for k in result.kills if k.in_flight > 0),
        "server_starts": vault.starts,
        "version_rows": storage.versions,
        "rows_without_blob": storage.rows_without_blob,
        "orphan_blobs": len(storage.orphan_blobs),
        "orphan_blob_keys": storage.orphan_blobs,
        "temp_files": len(storage.temp_files),
        "temp_file_names": storage.temp_files,
        "sqlite_integrity": storage.sqlite_integrity,
        "unexpected_responses": result.unexpected,
        "killer_error": result.killer_error,
        "storm_seconds": round(result.seconds, 1),
        "clean_restart_seconds": round(restart_seconds, 2),
        "server_log": str(vault.log_path),
        "server_log_errors": _error_lines(vault.log_path),
    }


def _error_lines(log_path: Path) -> int:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return sum(1 for line in text.splitlines() if " ERROR " in line or "Traceback" in line)


def _report(summary: dict[str, Any], record_property: Any, tmp_path: Path) -> None:
    """Orphans are allowed but never silent: print them and attach them to the report."""
    for key in (
        "acknowledged",
        "orphan_blobs",
        "orphan_blob_keys",
        "temp_files",
        "temp_file_names",
        "kills_with_uploads_in_flight",
        "storm_seconds",
    ):
        record_property(key, summary[key])
    record_property("crash_safety_summary", json.dumps(summary))
    (tmp_path / "crash-report.json").write_text(json.dumps(summary, indent=2))
    kills = "".join(
        f"\n    #{k['number']} after {k['progress']} uploads, aimed at {k['aim']}: "
        f"{k['in_flight']} in flight ({k['in_flight_bytes'] // 1024} KiB), "
        f"restarted in {k['restart_seconds']}s"
        for k in summary["kills"]
    )
    print(
        f"\n[crash-safety {summary['backend']}] seed={summary['seed']} "
        f"acknowledged={summary['acknowledged']}/{summary['uploads_planned']} "
        f"(201: {summary['acknowledged_first_time_201']}, "
        f"409 after lost response: {summary['acknowledged_by_409_after_lost_response']}) "
        f"rows={summary['version_rows']} interrupted={summary['interrupted_requests']}\n"
        f"  kills:{kills}\n"
        f"  orphan blobs: {summary['orphan_blobs']} {summary['orphan_blob_keys']}\n"
        f"  temp files / partial uploads: {summary['temp_files']} {summary['temp_file_names']}\n"
        f"  rows without blob: {len(summary['rows_without_blob'])}  "
        f"sqlite integrity: {summary['sqlite_integrity'] or 'n/a'}  "
        f"storm {summary['storm_seconds']}s, clean restart {summary['clean_restart_seconds']}s\n"
        f"  server log: {summary['server_log']} ({summary['server_log_errors']} ERROR lines)"
    )
