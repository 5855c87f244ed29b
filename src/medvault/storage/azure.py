"""Blobs as block blobs in an Azure Blob Storage container (``azure://container/prefix``).

A writer buffers one block at a time (``block_size``) and stages it as soon as it is
full, so memory stays flat however large the blob. Nothing is visible until commit:
a blob smaller than one block is a single Put Blob, a larger one a Put Block List of
the blocks this writer staged. Both are conditional (``If-None-Match: *``), so a key
that another writer committed first is refused by Azure itself, not only by the
``exists`` check in :meth:`AzureBlobStore.writer`: keys stay immutable. (Azurite also
fails that condition on another writer's staged blocks; the writer then checks that no
committed blob exists and commits without it, see :meth:`AzureBlobWriter.commit`.)
Tested against Azurite only, not against Azure itself.

Staged but uncommitted blocks belong to an "uncommitted blob" that listings, reads
and HEAD do not see. An abort deletes them at once; a crashed writer's are deleted
by :meth:`AzureBlobStore.sweep_incomplete`, and Azure itself discards any left a week
after their last Put Block (the counterpart of S3's lifecycle rule, built in).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from medvault.storage.azure_access import AzureAccess
from medvault.storage.base import BlobExists, BlobInfo, BlobNotFound, BlobStoreError

# Each ranged GET fetches this much; the SDK would otherwise read the first 32 MiB of
# a download into memory in one go (max_single_get_size).
READ_CHUNK = 4 * 1024 * 1024


def _service_client(access: AzureAccess) -> BlobServiceClient:
    options: dict[str, Any] = {
        "max_single_get_size": READ_CHUNK,
        "max_chunk_get_size": READ_CHUNK,
        # The SDK retries transient failures (timeouts, 5xx, 429) with backoff itself.
        "retry_total": 5,
    }
    if access.connection_string:
        return BlobServiceClient.from_connection_string(access.connection_string, **options)
    if not access.account_url:
        raise ValueError(
            "azure:// storage needs MEDVAULT_AZURE_CONNECTION_STRING or MEDVAULT_AZURE_ACCOUNT_URL"
        )
    credential: Any
    if access.account_key:
        credential = access.account_key
    elif access.sas_token:
        credential = access.sas_token
    else:
        try:
            # Optional (Entra ID sign-in only), so imported by name: not a dependency.
            identity = importlib.import_module("azure.identity")
        except ImportError:
            raise ValueError(
                "MEDVAULT_AZURE_ACCOUNT_URL without a key or SAS token signs in with "
                "Entra ID, which needs the azure-identity package (pip install azure-identity)"
            ) from None
        credential = identity.DefaultAzureCredential()
    return BlobServiceClient(access.account_url, credential=credential, **options)


def _error(action: str, exc: AzureError) -> BlobStoreError:
    # The error code only: Azure's messages can echo request URLs, which may carry a SAS.
    code = getattr(exc, "error_code", None) or type(exc).__name__
    return BlobStoreError(f"{action} failed: {code}")


class AzureBlobWriter:
    def __init__(self, store: AzureBlobStore, key: str) -> None:
        self._store = store
        self._blob = store.container.get_blob_client(store.object_key(key))
        self._key = key
        self._buffer = bytearray()
        # Block ids must all have the same length within a blob, and two writers of
        # one key (a race the conditional commit settles) must not overwrite each
        # other's blocks: a random writer id, then a counter.
        self._writer_id = secrets.token_hex(8)
        self._blocks: list[BlobBlock] = []
        self._done = False

    def _stage(self, body: bytes) -> None:
        raw = f"{self._writer_id}-{len(self._blocks):08d}".encode()
        block_id = base64.b64encode(raw).decode()
        self._blob.stage_block(block_id, body, length=len(body))
        self._blocks.append(BlobBlock(block_id=block_id))

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        block_size = self._store.block_size
        try:
            while len(self._buffer) >= block_size:
                self._stage(bytes(self._buffer[:block_size]))
                del self._buffer[:block_size]
        except AzureError as exc:
            raise _error("stage block", exc) from exc

    def _put(self, condition: MatchConditions | None) -> None:
        if not self._blocks:
            self._blob.upload_blob(
                bytes(self._buffer),
                blob_type="BlockBlob",
                overwrite=condition is None,
                max_concurrency=1,
            )
        else:
            self._blob.commit_block_list(self._blocks, match_condition=condition)

    def commit(self) -> None:
        try:
            if self._blocks and self._buffer:
                self._stage(bytes(self._buffer))
                self._buffer = bytearray()
            try:
                self._put(MatchConditions.IfMissing)
            except (ResourceExistsError, ResourceModifiedError):
                # Azurite (Azure too? not known) lets another writer's staged blocks
                # fail the condition, e.g. those of a copy killed mid-blob. If HEAD finds
                # no committed blob, commit without the condition: the S3 store's
                # guarantee (an exists check just before), in this rare case only.
                if self._blob.exists():
                    raise BlobExists(self._key) from None
                self._put(None)
        except AzureError as exc:
            raise _error("commit", exc) from exc
        self._buffer = bytearray()
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if self._blocks:
            # If this fails too, the sweep or Azure's one-week expiry removes the blocks;
            # the caller's original error is the one worth reporting.
            with contextlib.suppress(AzureError):
                self._store.discard_uncommitted(self._blob.blob_name)


class AzureBlobStore:
    def __init__(
        self,
        *,
        container: str,
        prefix: str = "",
        access: AzureAccess,
        block_size: int = 8 * 1024 * 1024,
    ) -> None:
        self.prefix = prefix.strip("/")
        self.block_size = block_size
        self._service = _service_client(access)
        self.container: ContainerClient = self._service.get_container_client(container)
        # scheme://host/path only: a SAS token in the URL's query must not reach a log.
        parts = urlsplit(self._service.url)
        self._where = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    def object_key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _listing_prefix(self, prefix: str) -> str:
        if prefix:
            return self.object_key(prefix)
        return f"{self.prefix}/" if self.prefix else ""

    def writer(self, key: str) -> AzureBlobWriter:
        if self.exists(key):
            raise BlobExists(key)
        return AzureBlobWriter(self, key)

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        if length == 0:
            return iter(())
        blob = self.container.get_blob_client(self.object_key(key))
        try:
            # The first ranged GET happens here, so a missing blob raises now, as on S3.
            download = blob.download_blob(offset=offset, length=length, max_concurrency=1)
        except ResourceNotFoundError:
            raise BlobNotFound(key) from None
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) == "InvalidRange":
                return iter(())  # offset at or past the end, as a file read there
            raise _error("read", exc) from exc
        except AzureError as exc:
            raise _error("read", exc) from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from download.chunks()
            except AzureError as exc:
                # A broken connection mid-body: a storage outage, not a verdict on the
                # blob (the envelope decides that).
                raise _error("read", exc) from exc

        return chunks()

    def delete(self, key: str) -> None:
        try:
            self.container.delete_blob(self.object_key(key), delete_snapshots="include")
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise _error("delete", exc) from exc

    def exists(self, key: str) -> bool:
        try:
            # HEAD: 404 for a blob that has only uncommitted blocks.
            return bool(self.container.get_blob_client(self.object_key(key)).exists())
        except AzureError as exc:
            raise _error("head", exc) from exc

    def list_blobs(self, prefix: str = "") -> Iterator[BlobInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for item in self.container.list_blobs(name_starts_with=self._listing_prefix(prefix)):
                yield BlobInfo(item.name[strip:], int(item.size), item.last_modified)
        except AzureError as exc:
            raise _error("list", exc) from exc

    def discard_uncommitted(self, name: str) -> None:
        """Delete the staged blocks of ``name`` unless a committed blob has that name.

        Delete Blob removes a blob that has only uncommitted blocks, blocks and all;
        the HEAD before it keeps a committed blob (someone else's, under a key that
        was free when this writer began) from going with them.
        """
        blob = self.container.get_blob_client(name)
        if blob.exists():
            return
        with contextlib.suppress(ResourceNotFoundError):
            blob.delete_blob()

    def sweep_incomplete(
        self, *, older_than_seconds: float, dry_run: bool = False, prefix: str = ""
    ) -> int:
        """Delete the staged blocks of writers that never committed (crashed processes).

        A listing that includes uncommitted blobs shows them with size 0 and the time
        of their last Put Block; a HEAD tells them from committed empty blobs. Only
        names under this store's prefix, so a container shared with other
        applications keeps their uploads.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        swept = 0
        try:
            listing = self.container.list_blobs(
                name_starts_with=self._listing_prefix(prefix), include=["uncommittedblobs"]
            )
            for item in listing:
                if item.size or item.last_modified >= cutoff:
                    continue
                blob = self.container.get_blob_client(item.name)
                if blob.exists():
                    continue  # a committed empty blob
                if not dry_run:
                    try:
                        blob.delete_blob()
                    except ResourceNotFoundError:
                        continue  # another instance swept it first
                swept += 1
        except AzureError as exc:
            raise _error("uncommitted-block sweep", exc) from exc
        return swept

    def check(self) -> None:
        try:
            self.container.get_container_properties()
        except AzureError as exc:
            raise BlobStoreError(
                f"container {self.container.container_name!r} not reachable: "
                f"{getattr(exc, 'error_code', None) or type(exc).__name__}"
            ) from None

    def describe(self) -> str:
        return f"azure:{self._where}/{self.container.container_name}/{self.prefix}"
