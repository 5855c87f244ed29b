"""Choose a BlobStore from a URI: ``file:///path``, ``s3://bucket/prefix`` or
``azure://container/prefix``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from medvault.storage.azure_access import AzureAccess
from medvault.storage.base import BlobStore
from medvault.storage.filesystem import FilesystemBlobStore
from medvault.storage.s3 import S3BlobStore


def open_blob_store(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_part_size: int = 8 * 1024 * 1024,
    azure_access: AzureAccess | None = None,
    azure_block_size: int = 8 * 1024 * 1024,
) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs must be local: {url}")
        return FilesystemBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"s3 URL needs a bucket: {url}")
        return S3BlobStore(
            bucket=parsed.netloc,
            prefix=parsed.path,
            endpoint_url=s3_endpoint_url,
            region=s3_region,
            part_size=s3_part_size,
        )
    if parsed.scheme == "azure":
        if not parsed.netloc:
            raise ValueError(f"azure URL needs a container: {url}")
        # Imported here: the Azure SDK costs start-up time that vaults on a folder or
        # S3 need not pay.
        from medvault.storage.azure import AzureBlobStore

        return AzureBlobStore(
            container=parsed.netloc,
            prefix=parsed.path,
            access=azure_access or AzureAccess(),
            block_size=azure_block_size,
        )
    raise ValueError(
        f"unsupported storage URL scheme {parsed.scheme!r}; use file://, s3:// or azure://"
    )
