"""Incremental backups: blobs are immutable, so a later backup links what an earlier one holds.

Run on both backends; the backups themselves are local folders either way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from medvault.governance.backup.manifest import blob_path
from medvault.governance.backup.service import check_backup, complete_backups, take_backup
from medvault.runtime import Runtime
from tests.governance.backup_support import upload
from tests.support.backends import Backend
from tests.support.factories import create_patient


def test_a_second_backup_copies_exactly_the_new_blobs(
    backend: Backend, runtime: Runtime, client: TestClient, tmp_path: Path
) -> None:
    destination = tmp_path / "backups"
    patient = create_patient(client)
    for _ in range(3):
        upload(client, patient)
    first = take_backup(settings=backend.settings, destination=destination, base=None)
    assert first.manifest.blob_stats.copied == first.manifest.blob_stats.count >= 3
    assert first.manifest.blob_stats.linked == 0

    upload(client, patient)
    in_store = {blob.key for blob in runtime.blobs.list_blobs()}
    new_keys = in_store - {entry.key for entry in first.manifest.blobs}
    assert new_keys, "the upload wrote no blob"
    # What `medvault backup DEST` does when DEST already holds a backup.
    assert complete_backups(destination) == [first.path]
    second = take_backup(settings=backend.settings, destination=destination, base=first.path)

    stats = second.manifest.blob_stats
    assert second.manifest.base_backup == first.path.name
    assert stats.count == len(in_store)
    assert stats.copied == len(new_keys)
    assert stats.linked == len(first.manifest.blobs)
    for entry in first.manifest.blobs:  # the same file, not a copy
        old, new = first.path / blob_path(entry.key), second.path / blob_path(entry.key)
        assert old.stat().st_ino == new.stat().st_ino
    for key in new_keys:
        assert (second.path / blob_path(key)).stat().st_nlink == 1

    # Each backup stands alone: deleting the older one leaves the newer complete.
    shutil.rmtree(first.path)
    assert check_backup(second.path) == []
    assert complete_backups(destination) == [second.path]

    full = take_backup(settings=backend.settings, destination=destination, base=None)
    assert full.manifest.blob_stats.copied == len(in_store)
    assert full.manifest.blob_stats.linked == 0
