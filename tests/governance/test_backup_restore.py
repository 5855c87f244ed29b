"""Backup of a live vault, restore into an empty one, and the proof that it is the same.

Every test runs on both backends (``backend``: sqlite-fs and pg-s3). Nothing is
mocked: the dumps come from SQLite's backup API and pg_dump, the blobs from the
store, and tampering is done to the backup's files on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from medvault.app import create_app
from medvault.audit.models import AuditCheckpoint, AuditEvent, MerkleNode
from medvault.audit.sealer import seal_pending
from medvault.audit.verify import Kind, verify_log
from medvault.config import Settings
from medvault.governance.backup import databases
from medvault.governance.backup.manifest import blob_path, read_manifest
from medvault.governance.backup.proof import prove_restore
from medvault.governance.backup.service import (
    BackupResult,
    RestoreRefused,
    check_backup,
    open_store,
    restore_backup,
    take_backup,
)
from medvault.runtime import Runtime, build_runtime
from tests.governance.backup_support import (
    StageTimes,
    WriteLoad,
    content_sha256,
    fresh_target,
    move_keys,
    upload,
)
from tests.support.audit_log import add_events
from tests.support.backends import Backend
from tests.support.factories import create_patient
from tests.support.services import PostgresDatabases


@pytest.fixture
def target(
    backend: Backend, tmp_path: Path, pg_databases: PostgresDatabases | None
) -> Iterator[Settings]:
    with fresh_target(backend.settings, tmp_path, pg_databases) as settings:
        yield settings


def _backup(backend: Backend, tmp_path: Path) -> BackupResult:
    return take_backup(settings=backend.settings, destination=tmp_path / "backups", base=None)


def _restored(source: Settings, target: Settings, backup: Path, tmp_path: Path) -> Runtime:
    move_keys(source, target, tmp_path / "keys")
    restore_backup(settings=target, backup_dir=backup)
    return build_runtime(target, run_migrations=False)


def _is_empty(settings: Settings) -> bool:
    return (
        databases.occupied(settings.clinical_database_url) is None
        and databases.occupied(settings.auth_db_url) is None
        and next(iter(open_store(settings).list_blobs()), None) is None
    )


def test_backup_under_write_load_restores_and_proves(
    backend: Backend, runtime: Runtime, client: TestClient, target: Settings, tmp_path: Path
) -> None:
    patient = create_patient(client)
    before = dict(upload(client, patient) for _ in range(15))
    seal_pending(runtime=runtime)
    stages = StageTimes()
    with WriteLoad(client, patient).running() as load:
        while len(load.acknowledged) < 2:  # the load is really running
            time.sleep(0.01)
        result = take_backup(
            settings=backend.settings,
            destination=tmp_path / "backups",
            base=None,
            observer=stages,
        )
        finished = time.monotonic()
    dump_started = stages.started["databases"]
    acked_before_dump = {a.document_id: a.sha256 for a in load.acknowledged if a.at < dump_started}
    during = [a for a in load.acknowledged if dump_started <= a.at <= finished]
    assert during, "no upload was acknowledged while the backup ran: not under load"
    expected = before | acked_before_dump
    manifest = result.manifest
    assert manifest.audit_checkpoint is not None
    assert check_backup(result.path) == []

    restored = _restored(backend.settings, target, result.path, tmp_path)
    try:
        proof = prove_restore(runtime=restored, checkpoint=manifest.audit_checkpoint)
        assert proof.integrity.healthy, proof.integrity.failures
        assert proof.integrity.checked >= len(expected)
        assert proof.audit.healthy, proof.audit.findings
        assert proof.checkpoint_matches and proof.healthy
        assert verify_log(runtime=restored).healthy  # `medvault audit verify`
        token = client.headers["Authorization"]  # the restored auth database knows it
        with TestClient(create_app(runtime=restored), raise_server_exceptions=False) as other:
            other.headers["Authorization"] = token
            for document_id, digest in expected.items():
                assert content_sha256(other, document_id) == digest
    finally:
        restored.close()


def test_restore_refuses_a_target_that_holds_data(
    backend: Backend, runtime: Runtime, client: TestClient, target: Settings, tmp_path: Path
) -> None:
    upload(client, create_patient(client))
    result = _backup(backend, tmp_path)
    with pytest.raises(RestoreRefused) as into_source:
        restore_backup(settings=backend.settings, backup_dir=result.path)
    reasons = "\n".join(into_source.value.reasons)
    assert "clinical database is not empty" in reasons
    assert "auth database is not empty" in reasons
    assert "blob store" in reasons and "is not empty" in reasons

    # Only one object in an otherwise empty target is enough, and nothing is changed.
    writer = open_store(target).writer("stray/object")
    writer.write(b"not mine")
    writer.commit()
    with pytest.raises(RestoreRefused) as one_blob:
        restore_backup(settings=target, backup_dir=result.path)
    assert one_blob.value.reasons == [
        f"the target blob store {open_store(target).describe()} is not empty: stray/object"
    ]
    assert databases.occupied(target.clinical_database_url) is None
    assert [b.key for b in open_store(target).list_blobs()] == ["stray/object"]


@pytest.mark.parametrize("victim", ["blob", "clinical dump", "auth dump"])
def test_a_tampered_backup_file_is_named_and_refused(
    backend: Backend,
    runtime: Runtime,
    client: TestClient,
    target: Settings,
    tmp_path: Path,
    victim: str,
) -> None:
    upload(client, create_patient(client))
    result = _backup(backend, tmp_path)
    manifest = result.manifest
    if victim == "blob":
        relative = blob_path(next(b.key for b in manifest.blobs if b.key.startswith("versions/")))
    else:
        relative = manifest.databases[victim.split()[0]].file
    path = result.path / relative
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    problems = check_backup(result.path)
    assert problems == [f"{path}: SHA-256 does not match the manifest"]
    with pytest.raises(RestoreRefused) as refused:
        restore_backup(settings=target, backup_dir=result.path)
    assert refused.value.reasons == problems
    assert _is_empty(target)


def _truncate(runtime: Runtime, size: int) -> None:
    """Cut the log back to ``size`` leaves, consistently: rows, nodes and checkpoints."""
    with runtime.clinical.session() as session:
        session.execute(delete(AuditEvent).where(AuditEvent.leaf_index >= size))
        session.execute(delete(AuditEvent).where(AuditEvent.leaf_index.is_(None)))
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.tree_size > size))
        for node in session.scalars(select(MerkleNode)).all():
            if (node.index + 1) << node.level > size:
                session.delete(node)
        session.commit()


@pytest.mark.parametrize("alteration", ["truncated", "edited"])
def test_the_backup_checkpoint_catches_an_altered_restored_log(
    backend: Backend, runtime: Runtime, target: Settings, tmp_path: Path, alteration: str
) -> None:
    add_events(runtime, 5)
    first = seal_pending(runtime=runtime).tree_size
    add_events(runtime, 6, first=5)
    assert seal_pending(runtime=runtime).tree_size > first
    result = _backup(backend, tmp_path)
    restored = _restored(backend.settings, target, result.path, tmp_path)
    try:
        checkpoint = read_manifest(result.path).audit_checkpoint
        assert prove_restore(runtime=restored, checkpoint=checkpoint).healthy
        if alteration == "truncated":
            _truncate(restored, first)
            # A consistent, shorter log: on its own it verifies ...
            assert verify_log(runtime=restored).healthy
        else:
            with restored.clinical.session() as session:
                session.execute(
                    update(AuditEvent).where(AuditEvent.leaf_index == 2).values(action="edited")
                )
                session.commit()
        proof = prove_restore(runtime=restored, checkpoint=checkpoint)
        # ... but not against the checkpoint the backup recorded.
        assert not proof.healthy
        kinds = set(proof.audit.counts)
        if alteration == "truncated":
            assert not proof.checkpoint_matches
            assert Kind.TRUNCATED.value in kinds
        else:
            assert Kind.EDITED.value in kinds
    finally:
        restored.close()
