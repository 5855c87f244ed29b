"""Damaged blobs: downloads fail loudly, versions are marked, and ``verify`` finds them.

Blobs are tampered with behind the vault's back, through the store itself. On S3
that means re-putting an object under its key, a test-only bypass of the write-once
rule that the vault itself never uses.

Range reads of a damaged blob: every segment is authenticated on its own, so a range
that covers only intact segments is served (206) until the version is marked
corrupt, by a full read or by ``verify``; from then on every read of the version is
refused with the integrity-failure problem.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medvault.cli.app import app as cli
from medvault.crypto.envelope import TAG_BYTES, EnvelopeHeader
from medvault.documents import integrity, repository
from medvault.documents.ingest import VERSION_BLOB_PREFIX, storage_key_for
from medvault.documents.models import DocumentVersion
from medvault.runtime import Runtime
from medvault.storage.filesystem import FilesystemBlobStore
from medvault.storage.s3 import S3BlobStore
from tests.cli.server_env import server_env
from tests.support.backends import Backend
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events

MiB = 1024 * 1024
INTEGRITY_PROBLEM = "urn:medvault:problem:integrity-failure"
# Past the first 1 MiB the server hands out before it knows the whole-file hash, so
# damage there is met after the 200 status line and must cut the stream.
SIZE = 2 * MiB + 300_000


@dataclass(frozen=True)
class Stored:
    document_id: str
    content: bytes


# -- behind the vault's back ------------------------------------------------------------


def read_blob(runtime: Runtime, key: str) -> bytes:
    return b"".join(runtime.blobs.read(key))


def write_blob(runtime: Runtime, key: str, data: bytes) -> None:
    store = runtime.blobs
    if isinstance(store, FilesystemBlobStore):
        store.path_for(key).write_bytes(data)
    elif isinstance(store, S3BlobStore):
        store.client.put_object(Bucket=store.bucket, Key=store.object_key(key), Body=data)
    else:
        raise AssertionError(f"unknown store {store!r}")


def version_row(runtime: Runtime, document_id: str, number: int = 1) -> DocumentVersion:
    with runtime.clinical.session() as session:
        row = repository.version(session, uuid.UUID(document_id), number)
    assert row is not None
    return row


def segment_offset(runtime: Runtime, key: str, segment: int) -> int:
    header = EnvelopeHeader.parse(read_blob(runtime, key)[:4096])
    return header.size + segment * (header.segment_size + TAG_BYTES)


def flip_byte(runtime: Runtime, key: str, offset: int) -> None:
    blob = bytearray(read_blob(runtime, key))
    blob[offset] ^= 0x01
    write_blob(runtime, key, bytes(blob))


# -- what a client sees -----------------------------------------------------------------


def upload(client: TestClient, patient_id: str, size: int = SIZE) -> Stored:
    content = pdf_bytes(size)
    response = upload_raw(client, patient_id, content)
    assert response.status_code == 201, response.text
    return Stored(response.json()["id"], content)


def full_read_fails_loudly(client: TestClient, document_id: str, original: bytes) -> str:
    """Either a clean 500 problem, or a cut stream whose bytes are a strict prefix."""
    response = client.get(f"/api/v1/documents/{document_id}/content")
    if response.status_code == 500:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == INTEGRITY_PROBLEM
        return "problem"
    assert response.status_code == 200
    body = response.content
    assert len(body) < len(original)
    assert original.startswith(body)
    return "cut"


def listed_state(client: TestClient, document_id: str, number: int = 1) -> str:
    response = client.get(f"/api/v1/documents/{document_id}/versions")
    assert response.status_code == 200
    state: str = next(v["state"] for v in response.json()["items"] if v["version"] == number)
    return state


def run_verify(backend: Backend, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["verify", *args], env=server_env(backend.settings))
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout


def assert_marked(client: TestClient, runtime: Runtime, damaged: list[tuple[Stored, int]]) -> None:
    for stored, number in damaged:
        assert version_row(runtime, stored.document_id, number).state == "corrupt"
        assert listed_state(client, stored.document_id, number) == "corrupt"


def assert_reported(
    client: TestClient,
    runtime: Runtime,
    backend: Backend,
    damaged: list[tuple[Stored, int]],
    intact: Stored,
    outcome: integrity.Outcome = integrity.Outcome.CORRUPT,
) -> None:
    """``verify --all`` names exactly the damaged versions; the intact one still verifies."""
    report = integrity.verify_all(runtime=runtime)
    assert not report.healthy
    failed = {(str(c.document_id), c.version): c for c in report.failures}
    assert set(failed) == {(s.document_id, n) for s, n in damaged}
    assert {c.outcome for c in failed.values()} == {outcome}
    assert report.ok == report.checked - len(damaged) >= 1

    code, output = run_verify(backend, "--all")
    assert code == 1
    for stored, _ in damaged:
        assert stored.document_id in output
    assert intact.document_id not in output
    assert run_verify(backend, intact.document_id)[0] == 0
    assert client.get(f"/api/v1/documents/{intact.document_id}/content").content == intact.content


@pytest.fixture
def patient_id(client: TestClient) -> str:
    return create_patient(client)


# -- the four kinds of damage -----------------------------------------------------------


def test_flipped_byte_in_a_middle_segment(
    client: TestClient, runtime: Runtime, backend: Backend, patient_id: str
) -> None:
    damaged, intact = upload(client, patient_id), upload(client, patient_id)
    key = version_row(runtime, damaged.document_id).storage_key
    flip_byte(runtime, key, segment_offset(runtime, key, 30) + 100)

    assert full_read_fails_loudly(client, damaged.document_id, damaged.content) == "cut"
    assert_marked(client, runtime, [(damaged, 1)])
    assert_reported(client, runtime, backend, [(damaged, 1)], intact)


def test_flipped_byte_in_the_first_segment_is_a_clean_500(
    client: TestClient,
    runtime: Runtime,
    backend: Backend,
    patient_id: str,
) -> None:
    damaged = upload(client, patient_id)
    key = version_row(runtime, damaged.document_id).storage_key
    flip_byte(runtime, key, segment_offset(runtime, key, 0) + 5)

    assert full_read_fails_loudly(client, damaged.document_id, damaged.content) == "problem"
    assert_marked(client, runtime, [(damaged, 1)])


def test_truncated_blob(
    client: TestClient, runtime: Runtime, backend: Backend, patient_id: str
) -> None:
    damaged, intact = upload(client, patient_id), upload(client, patient_id)
    key = version_row(runtime, damaged.document_id).storage_key
    cut_at = segment_offset(runtime, key, 25) + 1000  # inside segment 25
    write_blob(runtime, key, read_blob(runtime, key)[:cut_at])

    assert full_read_fails_loudly(client, damaged.document_id, damaged.content) == "cut"
    assert_marked(client, runtime, [(damaged, 1)])
    assert_reported(client, runtime, backend, [(damaged, 1)], intact)


def test_blobs_swapped_between_documents_and_between_versions(
    client: TestClient,
    runtime: Runtime,
    backend: Backend,
    patient_id: str,
) -> None:
    first, second, intact = (upload(client, patient_id) for _ in range(3))
    a = version_row(runtime, first.document_id).storage_key
    b = version_row(runtime, second.document_id).storage_key
    blob_a, blob_b = read_blob(runtime, a), read_blob(runtime, b)
    write_blob(runtime, a, blob_b)
    write_blob(runtime, b, blob_a)

    versioned = upload(client, patient_id, size=200_000)
    newer = pdf_bytes(300_000)
    response = client.post(
        f"/api/v1/documents/{versioned.document_id}/versions",
        params={"filename": "v2.pdf"},
        content=newer,
    )
    assert response.status_code == 201, response.text
    v1 = version_row(runtime, versioned.document_id, 1).storage_key
    v2 = version_row(runtime, versioned.document_id, 2).storage_key
    blob_v1, blob_v2 = read_blob(runtime, v1), read_blob(runtime, v2)
    write_blob(runtime, v1, blob_v2)
    write_blob(runtime, v2, blob_v1)

    for stored in (first, second):
        assert full_read_fails_loudly(client, stored.document_id, stored.content) == "problem"
        assert_marked(client, runtime, [(stored, 1)])
    assert full_read_fails_loudly(client, versioned.document_id, newer) == "problem"
    old = client.get(f"/api/v1/documents/{versioned.document_id}/versions/1/content")
    assert old.status_code == 500 and old.json()["type"] == INTEGRITY_PROBLEM

    damaged = [(first, 1), (second, 1), (versioned, 1), (versioned, 2)]
    assert_marked(client, runtime, damaged)
    assert_reported(client, runtime, backend, damaged, intact)


def test_deleted_blob_is_reported_missing(
    client: TestClient,
    runtime: Runtime,
    backend: Backend,
    patient_id: str,
) -> None:
    damaged, intact = upload(client, patient_id), upload(client, patient_id)
    runtime.blobs.delete(version_row(runtime, damaged.document_id).storage_key)

    assert full_read_fails_loudly(client, damaged.document_id, damaged.content) == "problem"
    assert_marked(client, runtime, [(damaged, 1)])
    assert_reported(client, runtime, backend, [(damaged, 1)], intact, integrity.Outcome.MISSING)
    assert "missing" in run_verify(backend, "--all")[1]


# -- verify on its own -----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_verify_finds_damage_before_anyone_reads_it(
    client: TestClient, runtime: Runtime, backend: Backend, patient_id: str, damage: str
) -> None:
    damaged, intact = upload(client, patient_id), upload(client, patient_id, size=50_000)
    key = version_row(runtime, damaged.document_id).storage_key
    if damage == "flip":
        flip_byte(runtime, key, segment_offset(runtime, key, 30))
    else:
        runtime.blobs.delete(key)

    code, output = run_verify(backend, damaged.document_id)
    assert code == 1 and damaged.document_id in output
    assert f"missing: {int(damage == 'delete')}" in output
    assert_marked(client, runtime, [(damaged, 1)])
    refused = client.get(f"/api/v1/documents/{damaged.document_id}/content")
    assert refused.status_code == 500 and refused.json()["type"] == INTEGRITY_PROBLEM
    [event] = audit_events(runtime, "document.version.integrity_failed")
    assert event.details["document_id"] == damaged.document_id
    assert_reported(
        client,
        runtime,
        backend,
        [(damaged, 1)],
        intact,
        integrity.Outcome.MISSING if damage == "delete" else integrity.Outcome.CORRUPT,
    )


def test_range_of_intact_segments_until_marked(
    client: TestClient, runtime: Runtime, patient_id: str
) -> None:
    damaged = upload(client, patient_id)
    key = version_row(runtime, damaged.document_id).storage_key
    flip_byte(runtime, key, segment_offset(runtime, key, 30) + 7)
    url = f"/api/v1/documents/{damaged.document_id}/content"

    head = client.get(url, headers={"Range": "bytes=0-9999"})
    assert head.status_code == 206 and head.content == damaged.content[:10_000]
    assert version_row(runtime, damaged.document_id).state == "available"

    integrity.verify_all(runtime=runtime)
    refused = client.get(url, headers={"Range": "bytes=0-9999"})
    assert refused.status_code == 500 and refused.json()["type"] == INTEGRITY_PROBLEM


def test_restored_blob_clears_the_mark(
    client: TestClient, runtime: Runtime, backend: Backend, patient_id: str
) -> None:
    damaged = upload(client, patient_id)
    key = version_row(runtime, damaged.document_id).storage_key
    backup = read_blob(runtime, key)
    flip_byte(runtime, key, segment_offset(runtime, key, 2))
    assert not integrity.verify_all(runtime=runtime).healthy
    assert version_row(runtime, damaged.document_id).state == "corrupt"

    write_blob(runtime, key, backup)  # the operator restores the blob from a backup
    code, output = run_verify(backend, "--all")
    assert code == 0, output
    assert "cleared: 1" in output
    assert version_row(runtime, damaged.document_id).state == "available"
    assert listed_state(client, damaged.document_id) == "available"
    served = client.get(f"/api/v1/documents/{damaged.document_id}/content")
    assert served.status_code == 200 and served.content == damaged.content
    assert len(audit_events(runtime, "document.version.integrity_restored")) == 1


def test_orphan_blobs_are_reported_but_not_failures(
    client: TestClient, runtime: Runtime, backend: Backend, patient_id: str
) -> None:
    stored = upload(client, patient_id, size=100_000)
    orphan_key = storage_key_for(uuid.uuid4())
    writer = runtime.blobs.writer(orphan_key)
    writer.write(b"left behind by an upload that crashed before its commit")
    writer.commit()
    # Blobs outside the version namespace belong to other features, not to this check.
    other = runtime.blobs.writer("uploads/in-progress")
    other.write(b"x")
    other.commit()

    report = integrity.verify_all(runtime=runtime)
    assert report.healthy and report.checked == report.ok == 1
    assert [blob.key for blob in report.orphan_blobs] == [orphan_key]

    code, output = run_verify(backend, "--all", "--json")
    assert code == 0
    assert f'"key": "{orphan_key}"' in output
    assert '"kind": "summary"' in output and stored.document_id not in output


def test_unknown_kek_is_unverifiable_not_corrupt(
    client: TestClient, runtime: Runtime, backend: Backend, patient_id: str
) -> None:
    stored = upload(client, patient_id, size=100_000)
    with runtime.clinical.session() as session:
        row = repository.version(session, uuid.UUID(stored.document_id), 1)
        assert row is not None
        row.kek_id = "kek-from-another-vault"
        session.commit()

    report = integrity.verify_all(runtime=runtime)
    assert [c.outcome for c in report.failures] == [integrity.Outcome.UNVERIFIABLE]
    assert not report.healthy
    # A keyring problem says nothing about the blob: the version is not marked.
    assert version_row(runtime, stored.document_id).state == "available"
    assert run_verify(backend, "--all")[0] == 1


def test_batches_cover_every_version(client: TestClient, runtime: Runtime, patient_id: str) -> None:
    stored = [upload(client, patient_id, size=5000 + i) for i in range(5)]
    seen: list[int] = []
    report = integrity.verify_all(runtime=runtime, batch_size=2, on_progress=seen.append)
    assert seen == [2, 4, 5]
    assert report.checked == report.ok == len(stored)
    [event] = audit_events(runtime, "integrity.verify")
    assert event.details["checked"] == 5


def test_verify_needs_a_target(backend: Backend, runtime: Runtime) -> None:
    assert run_verify(backend)[0] == 2
    assert run_verify(backend, "not-a-uuid")[0] == 2
    result = CliRunner().invoke(
        cli, ["verify", str(uuid.uuid4())], env=server_env(backend.settings)
    )
    assert result.exit_code == 1 and "No document" in result.stderr


def test_version_key_layout_is_what_the_orphan_scan_expects() -> None:
    assert storage_key_for(uuid.uuid4()).startswith(VERSION_BLOB_PREFIX)
