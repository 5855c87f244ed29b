"""Key rotation: new active KEK, every DEK re-wrapped, blobs untouched, documents readable."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from medvault.app import create_app
from medvault.cli.app import app as cli
from medvault.crypto.keyring import Keyring
from medvault.documents.models import DocumentVersion
from medvault.documents.rotation import RotationRefusedError, rotate_keys
from medvault.runtime import Runtime, build_runtime
from tests.cli.server_env import server_env
from tests.support.backends import Backend, SettingsFactory
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events

Uploaded = dict[str, list[bytes]]  # document id -> content of versions 1..n


@pytest.fixture
def uploaded(client: TestClient) -> Uploaded:
    """Four documents, one of them with two versions: five wrapped DEKs."""
    patient_id = create_patient(client)
    documents: Uploaded = {}
    for size in (5_000, 70_000, 200_000, 1_100_000):
        content = pdf_bytes(size)
        response = upload_raw(client, patient_id, content)
        assert response.status_code == 201, response.text
        documents[response.json()["id"]] = [content]
    first = next(iter(documents))
    newer = pdf_bytes(90_000)
    response = client.post(f"/api/v1/documents/{first}/versions", content=newer)
    assert response.status_code == 201, response.text
    documents[first].append(newer)
    return documents


def rows(runtime: Runtime) -> list[DocumentVersion]:
    with runtime.clinical.session() as session:
        return list(session.scalars(select(DocumentVersion).order_by(DocumentVersion.id)))


def blob_digests(runtime: Runtime) -> dict[str, str]:
    digest: dict[str, str] = {}
    for row in rows(runtime):
        sha = hashlib.sha256()
        for chunk in runtime.blobs.read(row.storage_key):
            sha.update(chunk)
        digest[row.storage_key] = sha.hexdigest()
    return digest


def keyring_file(runtime: Runtime) -> Keyring:
    path = runtime.settings.keyring_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return Keyring.from_json(path.read_text())


def assert_all_readable(client: TestClient, documents: Uploaded) -> None:
    for document_id, versions in documents.items():
        for number, content in enumerate(versions, start=1):
            response = client.get(f"/api/v1/documents/{document_id}/versions/{number}/content")
            assert response.status_code == 200, response.text
            assert response.content == content


def test_rotate_rewraps_every_dek_and_leaves_blobs_alone(
    client: TestClient, runtime: Runtime, uploaded: Uploaded
) -> None:
    original_kek = runtime.keyring.active_id
    assert {row.kek_id for row in rows(runtime)} == {original_kek}
    wraps_before = {row.id: row.wrapped_dek for row in rows(runtime)}
    blobs_before = blob_digests(runtime)

    result = rotate_keys(runtime=runtime)

    assert result.created_kek and result.previous_kek_id == original_kek
    new_kek = result.active_kek_id
    assert new_kek != original_kek
    assert (result.rewrapped, result.already_current, result.failed) == (5, 0, 0)
    after = rows(runtime)
    assert {row.kek_id for row in after} == {new_kek}
    assert all(row.wrapped_dek != wraps_before[row.id] for row in after)
    assert blob_digests(runtime) == blobs_before
    on_disk = keyring_file(runtime)
    assert on_disk.active_id == new_kek
    assert set(on_disk.kek_ids) == {original_kek, new_kek}
    assert_all_readable(client, uploaded)

    # New uploads are wrapped under the new KEK straight away.
    fresh = upload_raw(client, create_patient(client), pdf_bytes(3000)).json()
    with runtime.clinical.session() as session:
        fresh_row = session.scalar(
            select(DocumentVersion).where(DocumentVersion.document_id == uuid.UUID(fresh["id"]))
        )
    assert fresh_row is not None and fresh_row.kek_id == new_kek

    [event] = audit_events(runtime, "keys.rotate")
    assert event.actor_id == "system:keys.rotate"
    assert event.details["rewrapped"] == 5
    assert event.details["previous_kek_id"] == original_kek
    assert "key" not in event.details  # never key material in the log


def test_rotating_twice_through_the_cli(
    client: TestClient, runtime: Runtime, backend: Backend, uploaded: Uploaded
) -> None:
    blobs_before = blob_digests(runtime)
    keks = [runtime.keyring.active_id]
    for _ in range(2):
        result = CliRunner().invoke(cli, ["keys", "rotate"], env=server_env(backend.settings))
        assert result.exit_code == 0, result.output
        keks.append(result.stdout.strip())
        assert "re-wrapped 5 data keys" in result.stderr
        assert {row.kek_id for row in rows(runtime)} == {keks[-1]}

    assert len(set(keks)) == 3
    on_disk = keyring_file(runtime)
    assert set(on_disk.kek_ids) == set(keks) and on_disk.active_id == keks[-1]
    assert blob_digests(runtime) == blobs_before
    # The app's runtime still holds the first keyring; it reloads the file on demand,
    # as another instance would.
    assert runtime.keyring.active_id == keks[0]
    assert_all_readable(client, uploaded)
    assert len(audit_events(runtime, "keys.rotate")) == 2


def test_an_interrupted_rotation_finishes_with_rewrap_only(
    client: TestClient, runtime: Runtime, backend: Backend, uploaded: Uploaded
) -> None:
    class Crash(Exception):
        pass

    def crash_after_first_batch(walked: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        rotate_keys(runtime=runtime, batch_size=2, on_progress=crash_after_first_batch)
    new_kek = keyring_file(runtime).active_id
    on_new = [row for row in rows(runtime) if row.kek_id == new_kek]
    assert len(on_new) == 2  # the first batch committed, the rest did not
    assert_all_readable(client, uploaded)  # a half-rotated vault serves everything

    result = CliRunner().invoke(
        cli, ["keys", "rotate", "--rewrap-only"], env=server_env(backend.settings)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == new_kek
    assert "re-wrapped 3 data keys; 2 were already on" in result.stderr
    assert {row.kek_id for row in rows(runtime)} == {new_kek}
    assert len(keyring_file(runtime).kek_ids) == 2  # no extra key was made
    assert_all_readable(client, uploaded)


def test_a_keyring_from_the_environment_is_refused(
    runtime: Runtime,
    backend: Backend,
    uploaded: Uploaded,
    make_settings: SettingsFactory,
) -> None:
    before = runtime.settings.keyring_path.read_bytes()
    env_keyring = runtime.keyring.to_json()
    from_env = build_runtime(make_settings(keyring=env_keyring))
    try:
        with pytest.raises(RotationRefusedError, match="MEDVAULT_KEYRING"):
            rotate_keys(runtime=from_env)
    finally:
        from_env.close()

    env = {**server_env(backend.settings), "MEDVAULT_KEYRING": env_keyring}
    result = CliRunner().invoke(cli, ["keys", "rotate"], env=env)
    assert result.exit_code == 1
    assert "MEDVAULT_KEYRING" in result.stderr and "--rewrap-only" in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert runtime.settings.keyring_path.read_bytes() == before
    assert {row.kek_id for row in rows(runtime)} == {runtime.keyring.active_id}
    assert audit_events(runtime, "keys.rotate") == []


def test_a_second_rotation_at_the_same_time_is_refused(
    runtime: Runtime, uploaded: Uploaded
) -> None:
    path: Path = runtime.settings.keyring_path
    lock = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(RotationRefusedError, match="Another key rotation"):
            rotate_keys(runtime=runtime)
    finally:
        os.close(lock)
    assert len(keyring_file(runtime).kek_ids) == 1


def test_rows_with_an_unknown_kek_are_reported_and_kept(
    runtime: Runtime, backend: Backend, uploaded: Uploaded
) -> None:
    with runtime.clinical.session() as session:
        stray = session.scalars(select(DocumentVersion).limit(1)).one()
        stray.kek_id = "kek-from-another-vault"
        stray_id, stray_wrap = stray.id, stray.wrapped_dek
        session.commit()

    result = CliRunner().invoke(cli, ["keys", "rotate"], env=server_env(backend.settings))
    assert result.exit_code == 1
    assert "re-wrapped 4 data keys" in result.stderr
    assert str(stray_id) in result.stderr and "--rewrap-only" in result.stderr
    kept = next(row for row in rows(runtime) if row.id == stray_id)
    assert (kept.kek_id, kept.wrapped_dek) == ("kek-from-another-vault", stray_wrap)


def test_other_running_instances_wrap_new_uploads_under_the_new_kek(
    backend: Backend, runtime: Runtime, api_token: str
) -> None:
    other = build_runtime(backend.settings)  # an instance that was already running
    before = other.keyring.active_id
    result = rotate_keys(runtime=runtime)
    assert result.active_kek_id != before
    with TestClient(create_app(runtime=other)) as client:
        client.headers["Authorization"] = f"Bearer {api_token}"
        fresh = upload_raw(client, create_patient(client), pdf_bytes(3000)).json()
        assert client.get(f"/api/v1/documents/{fresh['id']}/content").status_code == 200
    with runtime.clinical.session() as session:
        row = session.scalar(
            select(DocumentVersion).where(DocumentVersion.document_id == uuid.UUID(fresh["id"]))
        )
    assert row is not None and row.kek_id == result.active_kek_id
    other.close()
