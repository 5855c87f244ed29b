"""Every BlobStore against the real thing: a folder, two S3 servers and Azurite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from medvault.storage.azure import AzureBlobStore
from medvault.storage.base import BlobExists, BlobNotFound, BlobStore
from medvault.storage.factory import open_blob_store
from medvault.storage.filesystem import TEMP_DIR, FilesystemBlobStore
from medvault.storage.s3 import S3BlobStore
from tests.support.azurite import CONTAINER, AzuriteServer
from tests.support.backends import BUCKET
from tests.support.services import RcloneS3Server, S3Server, unavailable

MiB = 1024 * 1024


@pytest.fixture(params=["filesystem", "s3-moto", "s3-rclone", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """Every store test runs on a folder, two independent S3 implementations and Azure."""
    if request.param == "filesystem":
        yield open_blob_store((tmp_path / "blobs").as_uri())
        return
    if request.param == "azure":
        azurite: AzuriteServer | None = request.getfixturevalue("azurite")
        if azurite is None:
            unavailable("Azurite could not be started (scripts/test.sh installs it)")
        assert azurite is not None
        # 1 MiB blocks (the smallest the settings allow): the 6 MiB writes below stage
        # several blocks before they commit or abort.
        yield open_blob_store(
            f"azure://{CONTAINER}/{uuid.uuid4().hex}",
            azure_access=azurite.access(),
            azure_block_size=MiB,
        )
        return
    server: S3Server | RcloneS3Server | None
    if request.param == "s3-moto":
        server = request.getfixturevalue("s3")
    else:
        server = request.getfixturevalue("rclone_s3")
    if server is None:
        unavailable(f"the {request.param} server could not be started")
    assert server is not None
    yield open_blob_store(
        f"s3://{BUCKET}/{uuid.uuid4().hex}",
        s3_endpoint_url=server.endpoint_url,
        s3_region="us-east-1",
        s3_part_size=5 * MiB,
    )


def write(store: BlobStore, key: str, data: bytes, piece: int = 300_000) -> None:
    writer = store.writer(key)
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])
    writer.commit()


def test_write_then_read_whole_and_ranges(store: BlobStore) -> None:
    data = os.urandom(1_500_000)
    write(store, "versions/ab/one", data)
    assert b"".join(store.read("versions/ab/one")) == data
    assert b"".join(store.read("versions/ab/one", offset=1_000_000)) == data[1_000_000:]
    assert b"".join(store.read("versions/ab/one", offset=17, length=1000)) == data[17:1017]
    assert store.exists("versions/ab/one")


def test_large_blob_uses_multipart_and_reads_back(store: BlobStore) -> None:
    data = os.urandom(11 * MiB + 123)
    write(store, "versions/cd/big", data, piece=MiB)
    assert b"".join(store.read("versions/cd/big")) == data
    listed = {info.key: info.size for info in store.list_blobs()}
    assert listed == {"versions/cd/big": len(data)}


def test_keys_are_immutable(store: BlobStore) -> None:
    write(store, "versions/ef/fixed", b"first")
    with pytest.raises(BlobExists):
        store.writer("versions/ef/fixed")
    assert b"".join(store.read("versions/ef/fixed")) == b"first"


def test_aborted_write_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer("versions/gh/aborted")
    writer.write(os.urandom(6 * MiB))  # past one S3 part, so a multipart upload is open
    writer.abort()
    writer.abort()
    assert not store.exists("versions/gh/aborted")
    assert list(store.list_blobs()) == []
    if isinstance(store, S3BlobStore):
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
        assert uploads.get("Uploads", []) == []
    if isinstance(store, FilesystemBlobStore):
        assert list((store.root / TEMP_DIR).iterdir()) == []
    if isinstance(store, AzureBlobStore):
        staged = store.container.list_blobs(
            name_starts_with=store.prefix, include=["uncommittedblobs"]
        )
        assert [item.name for item in staged] == []


def test_missing_blob(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        b"".join(store.read("versions/zz/missing"))
    assert not store.exists("versions/zz/missing")
    store.delete("versions/zz/missing")


def test_delete(store: BlobStore) -> None:
    write(store, "versions/ij/gone", b"bytes")
    store.delete("versions/ij/gone")
    assert not store.exists("versions/ij/gone")


def test_readiness_check_passes(store: BlobStore) -> None:
    store.check()


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", ".tmp/x", "a//b"])
def test_filesystem_rejects_escaping_keys(tmp_path: Path, key: str) -> None:
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.path_for(key)


def test_filesystem_sweeps_stale_temp_files(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    writer = store.writer("versions/kl/crashed")
    writer.write(b"partial")
    stale = next((tmp_path / TEMP_DIR).iterdir())
    os.utime(stale, (0, 0))
    assert store.sweep_incomplete(older_than_seconds=3600) == 1
    assert list((tmp_path / TEMP_DIR).iterdir()) == []


def test_filesystem_blobs_are_private(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    write(store, "versions/mn/p", b"x")
    assert (tmp_path / "blobs").stat().st_mode & 0o077 == 0
    assert store.path_for("versions/mn/p").stat().st_mode & 0o077 == 0


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        open_blob_store("ftp://example/bucket")


def test_ranged_reads_of_objects_stored_with_a_checksum(rclone_s3: RcloneS3Server | None) -> None:
    """Objects another client stored with a CRC32 (boto3's default) still read in ranges.

    rclone, like Ceph RGW and older MinIO, answers a ranged GET with the whole object's
    checksum; a client that validates response checksums then fails on every range.
    """
    if rclone_s3 is None:
        unavailable("rclone serve s3 could not be started")
    assert rclone_s3 is not None
    prefix = uuid.uuid4().hex
    data = os.urandom(300_000)
    # A default boto3 client sends a CRC32 with the PUT, which the server keeps.
    rclone_s3.client().put_object(Bucket=BUCKET, Key=f"{prefix}/versions/op/old", Body=data)
    store = open_blob_store(
        f"s3://{BUCKET}/{prefix}", s3_endpoint_url=rclone_s3.endpoint_url, s3_region="us-east-1"
    )
    assert b"".join(store.read("versions/op/old", offset=1000, length=64)) == data[1000:1064]
    assert b"".join(store.read("versions/op/old")) == data


def test_a_crashed_writer_is_swept_and_a_live_one_kept(
    store: BlobStore, request: pytest.FixtureRequest
) -> None:
    """A writer that never commits or aborts (its process died) is discarded by the sweep.

    On S3 that is an open multipart upload (so more than one part's worth is written);
    on a folder, a temp file. A sweep with a long grace keeps both untouched.
    """
    crashed = store.writer("versions/cr/crashed")
    crashed.write(os.urandom(6 * MiB))
    if "moto" not in request.node.name:
        # moto reports every multipart upload as initiated on 2010-11-10, so only the
        # filesystem and rclone can show that a young upload survives the grace period.
        assert store.sweep_incomplete(older_than_seconds=3600) == 0
    assert store.sweep_incomplete(older_than_seconds=0, dry_run=True) == 1
    assert store.sweep_incomplete(older_than_seconds=0) == 1
    assert store.sweep_incomplete(older_than_seconds=0) == 0
    assert not store.exists("versions/cr/crashed")
    # A writer that commits after a sweep removed nothing of its own still works.
    write(store, "versions/cr/fine", b"fine")
    assert store.sweep_incomplete(older_than_seconds=0) == 0
    assert b"".join(store.read("versions/cr/fine")) == b"fine"
