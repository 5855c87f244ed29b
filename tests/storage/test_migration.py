"""``medvault storage migrate`` between real stores: a folder, moto's S3 and Azurite.

A vault on a folder moves to Azure and serves its documents from there; a copy from
S3 to Azure that is interrupted resumes; a target blob changed afterwards is found
by the verification and named, and never overwritten.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.cli.app import app as cli
from medvault.config import Settings
from medvault.documents.integrity import verify_all
from medvault.runtime import Runtime, build_runtime
from medvault.storage.azure import AzureBlobStore
from medvault.storage.base import BlobStore
from medvault.storage.factory import open_blob_store
from medvault.storage.filesystem import FilesystemBlobStore
from medvault.storage.migration import BlobResult, MigrationObserver, migrate_blobs
from medvault.storage.s3 import S3BlobStore
from tests.cli.server_env import server_env
from tests.support.azurite import CONTAINER, AzuriteServer
from tests.support.backends import BUCKET
from tests.support.factories import create_patient, upload_raw
from tests.support.services import S3Server, unavailable

MiB = 1024 * 1024


@pytest.fixture
def azure(azurite: AzuriteServer | None) -> AzuriteServer:
    if azurite is None:
        unavailable("Azurite could not be started (scripts/test.sh installs it)")
    assert azurite is not None
    return azurite


@pytest.fixture
def moto(s3: S3Server | None) -> S3Server:
    if s3 is None:
        unavailable("the moto S3 server could not be started")
    assert s3 is not None
    return s3


def azure_url() -> str:
    return f"azure://{CONTAINER}/{uuid.uuid4().hex}"


def migrate(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["storage", "migrate", *args], env=env)


def contents(store: BlobStore) -> dict[str, bytes]:
    return {blob.key: b"".join(store.read(blob.key)) for blob in store.list_blobs()}


def fill(store: BlobStore, count: int) -> dict[str, bytes]:
    """``count`` blobs of assorted sizes, one of them larger than an Azure block."""
    written = {}
    for index in range(count):
        key = f"versions/{index:02x}/{uuid.uuid4()}"
        data = os.urandom(3 * MiB + 5 if index == 0 else 1000 + index * 7919)
        writer = store.writer(key)
        writer.write(data)
        writer.commit()
        written[key] = data
    return written


def pdf(size: int) -> bytes:
    return (b"%PDF-1.7\n%synthetic\n" + os.urandom(size))[:size]


@pytest.fixture
def file_vault(tmp_path: Path) -> Iterator[tuple[Settings, Runtime, TestClient]]:
    # No embedded worker: no preview or text blob appears while the test migrates.
    settings = Settings(env="test", data_dir=tmp_path / "data", embedded_worker=False)
    runtime = build_runtime(settings, run_migrations=True)
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="migrate").token
        session.commit()
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield settings, runtime, client
    runtime.close()


def test_a_vault_on_a_folder_moves_to_azure_and_serves_from_there(
    file_vault: tuple[Settings, Runtime, TestClient], azure: AzuriteServer
) -> None:
    settings, runtime, client = file_vault
    patient = create_patient(client)
    documents = {}
    for size in (200_000, 2 * MiB + 12345):
        content = pdf(size)
        created = upload_raw(client, patient, content)
        assert created.status_code == 201, created.text
        documents[created.json()["id"]] = content
    target = azure_url()
    env = {
        **server_env(settings),
        "MEDVAULT_AZURE_CONNECTION_STRING": azure.connection_string,
        "MEDVAULT_AZURE_BLOCK_SIZE": str(MiB),
    }

    result = migrate(env, "--to", target)
    assert result.exit_code == 0, result.output
    assert "2 copied" in result.stderr and "0 mismatched" in result.stderr
    assert azure.connection_string not in result.output
    assert "AccountKey" not in result.output

    # Switch MEDVAULT_STORAGE_URL: the same databases and keys, blobs from Azure.
    moved = Settings(
        env="test",
        data_dir=settings.data_dir,
        embedded_worker=False,
        storage_url=target,
        azure_connection_string=azure.connection_string,
        azure_block_size=MiB,
    )
    assert "AccountKey" not in repr(moved)
    on_azure = build_runtime(moved)
    try:
        assert contents(on_azure.blobs) == contents(runtime.blobs)
        with TestClient(create_app(runtime=on_azure)) as azure_client:
            azure_client.headers.update(client.headers)
            for document, content in documents.items():
                whole = azure_client.get(f"/api/v1/documents/{document}/content")
                assert whole.status_code == 200, whole.text
                assert whole.content == content
                part = azure_client.get(
                    f"/api/v1/documents/{document}/content",
                    headers={"Range": "bytes=65530-65545"},
                )
                assert part.status_code == 206
                assert part.content == content[65530:65546]
            # A new upload lands in Azure (several staged blocks) and reads back.
            fresh = pdf(3 * MiB + 1)
            created = upload_raw(azure_client, patient, fresh)
            assert created.status_code == 201, created.text
            read = azure_client.get(f"/api/v1/documents/{created.json()['id']}/content")
            assert read.content == fresh
        report = verify_all(runtime=on_azure)
        assert report.healthy and report.checked == 3 and report.orphans == 0
    finally:
        on_azure.close()

    # The tail pass after the switch: nothing left to copy, the new blob is target-only.
    again = migrate(env, "--to", target)
    assert again.exit_code == 0, again.output
    assert "0 copied" in again.stderr and "2 already there" in again.stderr
    assert "1 only at the target" in again.stderr


class StopAfter(MigrationObserver):
    """Interrupts a run (as Ctrl-C would) once ``count`` blobs are done."""

    def __init__(self, count: int) -> None:
        self.count = count

    def blob_done(self, result: BlobResult) -> None:
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


def test_an_interrupted_copy_from_s3_to_azure_resumes_and_a_changed_blob_is_named(
    moto: S3Server, azure: AzuriteServer
) -> None:
    prefix = uuid.uuid4().hex
    source = open_blob_store(
        f"s3://{BUCKET}/{prefix}", s3_endpoint_url=moto.endpoint_url, s3_region="us-east-1"
    )
    written = fill(source, 6)
    target_url = azure_url()
    target = open_blob_store(target_url, azure_access=azure.access(), azure_block_size=MiB)
    assert isinstance(target, AzureBlobStore)

    with pytest.raises(KeyboardInterrupt):
        migrate_blobs(source=source, target=target, parallel=1, observer=StopAfter(2))
    # Stopped after two; one more may have been under way and finished (never half).
    done = len(list(target.list_blobs()))
    assert 2 <= done <= 3
    # A copy killed mid-blob leaves staged blocks under a key it never committed.
    pending = sorted(set(written) - {blob.key for blob in target.list_blobs()})[0]
    crashed = target.writer(pending)
    crashed.write(os.urandom(2 * MiB))

    env = {
        "MEDVAULT_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
        "MEDVAULT_S3_ENDPOINT_URL": moto.endpoint_url,
        "MEDVAULT_S3_REGION": "us-east-1",
        "MEDVAULT_AZURE_CONNECTION_STRING": azure.connection_string,
        "MEDVAULT_AZURE_BLOCK_SIZE": str(MiB),
    }
    resumed = migrate(env, "--to", target_url)
    assert resumed.exit_code == 0, resumed.output
    assert f"{6 - done} copied" in resumed.stderr
    assert f"{done} already there" in resumed.stderr
    assert contents(target) == written

    # Someone changes a stored blob at the target (same size, other bytes).
    changed = sorted(written)[1]
    tampered = bytearray(written[changed])
    tampered[500] ^= 0x01
    target_blob = target.container.get_blob_client(target.object_key(changed))
    target_blob.upload_blob(bytes(tampered), overwrite=True)

    checked = migrate(env, "--to", target_url)
    assert checked.exit_code == 1
    assert checked.stdout.strip() == f"MISMATCH {changed}: SHA-256 differs"
    assert "1 mismatched" in checked.stderr and "not overwritten" in checked.stderr
    assert b"".join(target.read(changed)) == bytes(tampered)
    # --trust-existing compares sizes only: the final quick pass before a switch.
    trusted = migrate(env, "--to", target_url, "--trust-existing")
    assert trusted.exit_code == 0, trusted.output


def test_a_folder_to_s3_finds_a_truncated_blob_and_refuses_its_own_store(
    tmp_path: Path, moto: S3Server
) -> None:
    source = FilesystemBlobStore(tmp_path / "blobs")
    written = fill(source, 3)
    target_url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    env = {
        "MEDVAULT_STORAGE_URL": (tmp_path / "blobs").as_uri(),
        "MEDVAULT_S3_ENDPOINT_URL": moto.endpoint_url,
        "MEDVAULT_S3_REGION": "us-east-1",
    }
    first = migrate(env, "--to", target_url)
    assert first.exit_code == 0, first.output
    assert "3 copied" in first.stderr
    target = open_blob_store(target_url, s3_endpoint_url=moto.endpoint_url, s3_region="us-east-1")
    assert isinstance(target, S3BlobStore)
    assert contents(target) == written

    short = sorted(written)[2]
    object_key = target.object_key(short)
    moto.client().put_object(Bucket=BUCKET, Key=object_key, Body=written[short][:-1])
    for flag in ("--verify-existing", "--trust-existing"):
        checked = migrate(env, "--to", target_url, flag)
        assert checked.exit_code == 1
        size = len(written[short])
        assert checked.stdout.strip() == (
            f"MISMATCH {short}: target holds {size - 1} bytes, source {size}"
        )

    same = migrate(env, "--to", (tmp_path / "blobs").as_uri())
    assert same.exit_code == 2
    assert "own store" in same.stderr


def test_a_target_bucket_that_does_not_exist_ends_the_copy_with_one_line(
    tmp_path: Path, moto: S3Server
) -> None:
    source = FilesystemBlobStore(tmp_path / "blobs")
    fill(source, 1)
    env = {
        "MEDVAULT_STORAGE_URL": (tmp_path / "blobs").as_uri(),
        "MEDVAULT_S3_ENDPOINT_URL": moto.endpoint_url,
        "MEDVAULT_S3_REGION": "us-east-1",
    }
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/vault"
    result = migrate(env, "--to", missing)
    # Listing the target is the first thing the copy does: a clean exit 1, not a
    # botocore traceback (as it was before list_blobs named its failures).
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Blob store error: list failed: NoSuchBucket" in result.stderr
    assert "Traceback" not in result.output
