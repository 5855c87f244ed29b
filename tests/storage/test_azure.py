"""What the Azure store does beyond the shared store suite, against Azurite."""

from __future__ import annotations

import os
import uuid

import pytest

from medvault.storage.azure import AzureBlobStore
from medvault.storage.azure_access import AzureAccess
from medvault.storage.base import BlobExists, BlobStoreError
from medvault.storage.factory import open_blob_store
from tests.support.azurite import ACCOUNT_KEY, CONTAINER, AzuriteServer
from tests.support.services import unavailable

MiB = 1024 * 1024


@pytest.fixture
def server(azurite: AzuriteServer | None) -> AzuriteServer:
    if azurite is None:
        unavailable("Azurite could not be started (scripts/test.sh installs it)")
    assert azurite is not None
    return azurite


def open_store(server: AzuriteServer, access: AzureAccess | None = None) -> AzureBlobStore:
    store = open_blob_store(
        f"azure://{CONTAINER}/{uuid.uuid4().hex}",
        azure_access=access or server.access(),
        azure_block_size=MiB,
    )
    assert isinstance(store, AzureBlobStore)
    return store


def staged_blocks(store: AzureBlobStore, key: str) -> int:
    blob = store.container.get_blob_client(store.object_key(key))
    _, uncommitted = blob.get_block_list("uncommitted")
    return len(uncommitted)


def test_blocks_are_staged_while_the_stream_arrives(server: AzuriteServer) -> None:
    """A writer holds at most one block: the rest is already in Azure, uncommitted."""
    store = open_store(server)
    writer = store.writer("versions/st/streamed")
    data = os.urandom(3 * MiB + 10)
    for start in range(0, len(data), 256 * 1024):
        writer.write(data[start : start + 256 * 1024])
    assert staged_blocks(store, "versions/st/streamed") == 3
    assert not store.exists("versions/st/streamed")  # invisible until the commit
    writer.commit()
    assert b"".join(store.read("versions/st/streamed")) == data


def test_a_key_committed_by_another_writer_meanwhile_is_refused(server: AzuriteServer) -> None:
    """Both writers pass the exists check; Azure's conditional commit lets one win."""
    store = open_store(server)
    first, second = store.writer("versions/ra/ce"), store.writer("versions/ra/ce")
    first.write(os.urandom(2 * MiB))
    second.write(b"small, one Put Blob")
    first.commit()
    with pytest.raises(BlobExists):
        second.commit()
    second.abort()
    assert store.exists("versions/ra/ce")  # the abort left the winner's blob alone
    with pytest.raises(BlobExists):
        store.writer("versions/ra/ce")


def test_two_writers_of_one_key_never_mix(server: AzuriteServer) -> None:
    """One small (Put Blob) and one large (Put Block List) writer of the same key.

    Exactly one commit wins and the blob holds its bytes; the other is refused. (The
    small one wins: the large writer's staged blocks are not a blob.)
    """
    store = open_store(server)
    small, large = store.writer("versions/ra/big"), store.writer("versions/ra/big")
    large_data = os.urandom(2 * MiB + 1)
    small.write(b"small")
    large.write(large_data)
    winners = []
    for name, writer in (("small", small), ("large", large)):
        try:
            writer.commit()
            winners.append(name)
        except BlobExists:
            writer.abort()
    assert len(winners) == 1
    expected = b"small" if winners == ["small"] else large_data
    assert b"".join(store.read("versions/ra/big")) == expected


def test_reads_past_the_end_are_empty(server: AzuriteServer) -> None:
    store = open_store(server)
    writer = store.writer("versions/en/d")
    writer.write(b"0123456789")
    writer.commit()
    assert b"".join(store.read("versions/en/d", offset=10)) == b""
    assert b"".join(store.read("versions/en/d", offset=500, length=5)) == b""
    assert b"".join(store.read("versions/en/d", offset=8, length=50)) == b"89"


def test_wrong_credentials_fail_the_readiness_check_without_the_key(
    server: AzuriteServer,
) -> None:
    wrong = AzureAccess(account_url=server.endpoint_url, account_key=ACCOUNT_KEY[::-1])
    store = open_store(server, wrong)
    with pytest.raises(BlobStoreError) as raised:
        store.check()
    assert ACCOUNT_KEY[::-1] not in str(raised.value)
    assert ACCOUNT_KEY[::-1] not in store.describe()
    assert store.describe().startswith(f"azure:{server.endpoint_url}/{CONTAINER}/")


def test_account_url_with_a_key_works(server: AzuriteServer) -> None:
    store = open_store(
        server, AzureAccess(account_url=server.endpoint_url, account_key=ACCOUNT_KEY)
    )
    store.check()
    writer = store.writer("versions/ke/y")
    writer.write(b"key")
    writer.commit()
    assert [blob.key for blob in store.list_blobs()] == ["versions/ke/y"]
    assert "AccountKey" not in repr(server.access())


def test_the_sweep_keeps_committed_empty_blobs(server: AzuriteServer) -> None:
    """Listed with uncommitted blobs, a committed empty blob also shows size 0."""
    store = open_store(server)
    empty = store.writer("versions/em/pty")
    empty.commit()
    crashed = store.writer("versions/em/crashed")
    crashed.write(os.urandom(MiB + 1))
    assert store.sweep_incomplete(older_than_seconds=0) == 1
    listed = store.container.list_blobs(name_starts_with=store.prefix, include=["uncommittedblobs"])
    assert [item.name for item in listed] == [store.object_key("versions/em/pty")]
    assert b"".join(store.read("versions/em/pty")) == b""
