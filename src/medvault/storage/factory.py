"""Choose a BlobStore from a URI: ``file:///path`` or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from medvault.storage.base import BlobStore
from medvault.storage.filesystem import FilesystemBlobStore
from medvault.storage.s3 import S3BlobStore


def open_blob_store(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_part_size: int = 8 * 1024 * 1024,
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
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r}; use file:// or s3://")
