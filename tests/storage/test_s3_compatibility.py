"""The vault end to end on two independent S3 servers: moto and ``rclone serve s3``.

Small documents are one PUT and large ones a multipart upload; both must upload,
download whole, answer ranges and pass ``verify --all`` on either server, with no
plaintext in the bucket. A store that stops answering makes a read a 503 problem,
never a 500, and never marks the version corrupt.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.documents.integrity import verify_all
from medvault.documents.models import DocumentVersion, VersionState
from medvault.runtime import Runtime, build_runtime
from medvault.storage.base import BlobStoreError, discard
from medvault.storage.s3 import S3BlobStore
from tests.support.backends import BUCKET
from tests.support.factories import create_patient, upload_raw
from tests.support.services import (
    TEST_S3_KEY,
    RcloneS3Server,
    S3Server,
    rclone_s3_server,
    unavailable,
)

MiB = 1024 * 1024
PART = 5 * MiB
MARKER = b"SYNTHETIC-PLAINTEXT-MARKER"


def pdf_with_marker(size: int) -> bytes:
    """A PDF whose plaintext repeats a marker, so any unencrypted copy is easy to find."""
    head = b"%PDF-1.7\n%synthetic\n"
    body = (MARKER + os.urandom(38)) * (size // 64 + 1)
    return (head + body)[:size]


def s3_settings(tmp_path: Path, endpoint_url: str, prefix: str) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        storage_url=f"s3://{BUCKET}/{prefix}",
        s3_endpoint_url=endpoint_url,
        s3_region="us-east-1",
        s3_part_size=PART,
    )


def open_client(runtime: Runtime) -> TestClient:
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="s3-compat").token
        session.commit()
    client = TestClient(create_app(runtime=runtime), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    return client


@pytest.fixture(params=["moto", "rclone"])
def server(request: pytest.FixtureRequest) -> S3Server | RcloneS3Server:
    found: S3Server | RcloneS3Server | None = request.getfixturevalue(
        "s3" if request.param == "moto" else "rclone_s3"
    )
    if found is None:
        unavailable(f"the {request.param} S3 server could not be started")
    assert found is not None
    return found


@pytest.fixture
def vault(
    tmp_path: Path, server: S3Server | RcloneS3Server
) -> Iterator[tuple[Runtime, TestClient, str]]:
    prefix = uuid.uuid4().hex
    runtime = build_runtime(s3_settings(tmp_path, server.endpoint_url, prefix), run_migrations=True)
    with open_client(runtime) as client:
        yield runtime, client, prefix
    runtime.close()


@pytest.mark.parametrize("size", [200_000, PART + 3 * 65536 + 17], ids=["single-put", "multipart"])
def test_upload_download_range_and_verify(
    vault: tuple[Runtime, TestClient, str], server: S3Server | RcloneS3Server, size: int
) -> None:
    runtime, client, prefix = vault
    patient = create_patient(client)
    content = pdf_with_marker(size)
    created = upload_raw(client, patient, content)
    assert created.status_code == 201, created.text
    document = created.json()["id"]

    whole = client.get(f"/api/v1/documents/{document}/content")
    assert whole.status_code == 200, whole.text
    assert whole.content == content

    # A range inside one segment, and one across a segment boundary.
    for first, last in ((10, 99), (65536 - 5, 65536 + 5)):
        part = client.get(
            f"/api/v1/documents/{document}/content", headers={"Range": f"bytes={first}-{last}"}
        )
        assert part.status_code == 206, part.text
        assert part.content == content[first : last + 1]

    report = verify_all(runtime=runtime)
    assert report.healthy and report.checked == 1 and report.orphans == 0

    bucket = server.client()
    keys = [
        item["Key"]
        for item in bucket.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])
    ]
    assert len(keys) == 1
    stored = bucket.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
    assert len(stored) > size
    assert MARKER not in stored


def test_a_store_that_stops_answering_is_a_503_not_corruption(tmp_path: Path) -> None:
    """Failure drill on an rclone server this test started itself."""
    with rclone_s3_server(str(tmp_path / "own-s3")) as own:
        if own is None:
            unavailable("rclone serve s3 could not be started")
        assert own is not None
        own.client().create_bucket(Bucket=BUCKET)
        settings = s3_settings(tmp_path, own.endpoint_url, uuid.uuid4().hex)
        runtime = build_runtime(settings, run_migrations=True)
        try:
            with open_client(runtime) as client:
                patient = create_patient(client)
                document = upload_raw(client, patient, pdf_with_marker(100_000)).json()["id"]
                own.stop()
                response = client.get(f"/api/v1/documents/{document}/content")
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:medvault:problem:storage-unavailable"
            assert int(response.headers["Retry-After"]) > 0
            with runtime.clinical.session() as session:
                states = {v.state for v in session.query(DocumentVersion).all()}
            assert states == {VersionState.AVAILABLE}
        finally:
            runtime.close()


def test_an_unreachable_store_raises_its_own_error_and_recovers(tmp_path: Path) -> None:
    """Every call of an unreachable store raises BlobStoreError, never botocore's own.

    Callers tell an outage from a bug by that type: ``exists`` (asked by every upload)
    leaked EndpointConnectionError and made uploads a 500, and ``delete`` leaked it out
    of ``discard``, which is called *after* a commit and must leave the blob to a sweeper.
    """
    with rclone_s3_server(str(tmp_path / "own-s3")) as own:
        if own is None:
            unavailable("rclone serve s3 could not be started")
        assert own is not None
        own.client().create_bucket(Bucket=BUCKET)
        store = S3BlobStore(bucket=BUCKET, prefix="outage", endpoint_url=own.endpoint_url)
        # One try per call: the error's type is under test here, not boto3's backoff.
        store.client = boto3.client(
            "s3",
            endpoint_url=own.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=TEST_S3_KEY,
            aws_secret_access_key=TEST_S3_KEY,
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )
        writer = store.writer("versions/ab/blob")
        writer.write(b"ciphertext")
        writer.commit()
        own.stop()
        with pytest.raises(BlobStoreError):
            store.exists("versions/ab/blob")
        with pytest.raises(BlobStoreError):
            store.writer("versions/ab/other")
        with pytest.raises(BlobStoreError):
            store.delete("versions/ab/blob")
        with pytest.raises(BlobStoreError, match="list failed"):
            next(store.list_blobs())
        assert discard(store, ["versions/ab/blob"], finisher="the reconciler") == 0
        own.start()
        assert store.exists("versions/ab/blob")
        assert [blob.key for blob in store.list_blobs()] == ["versions/ab/blob"]
        assert discard(store, ["versions/ab/blob"], finisher="the reconciler") == 1
        assert not store.exists("versions/ab/blob")
