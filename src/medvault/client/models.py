"""What the SDK returns: patients, documents, versions, and where an upload stands."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from medvault.client.errors import VaultTransferError

UploadSource = str | os.PathLike[str] | BinaryIO
UploadProgress = Callable[[int], None]
DownloadProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Patient:
    id: str
    system: str
    value: str
    family_name: str
    given_name: str
    birth_date: date
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Patient:
        return cls(
            id=str(data["id"]),
            system=data["identifier"]["system"],
            value=data["identifier"]["value"],
            family_name=data["family_name"],
            given_name=data["given_name"],
            birth_date=date.fromisoformat(data["birth_date"]),
            raw=data,
        )


@dataclass(frozen=True)
class Document:
    """A document as the API describes it, with its current version's file details."""

    id: str
    patient_id: str
    version: int
    title: str
    document_type: str
    filename: str
    content_type: str
    size: int
    sha256: str
    classification: str
    status: str
    created_at: datetime
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Document:
        return cls(
            id=str(data["id"]),
            patient_id=str(data["patient_id"]),
            version=int(data["version"]),
            title=data["title"],
            document_type=data["document_type"],
            filename=data["filename"],
            content_type=data["content_type"],
            size=int(data["size"]),
            sha256=data["sha256"],
            classification=data["classification"],
            status=data["status"],
            created_at=datetime.fromisoformat(data["created_at"]),
            raw=data,
        )


@dataclass(frozen=True)
class Version:
    version: int
    filename: str
    size: int
    sha256: str
    state: str
    created_at: datetime
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Version:
        return cls(
            version=int(data["version"]),
            filename=data["filename"],
            size=int(data["size"]),
            sha256=data["sha256"],
            state=data["state"],
            created_at=datetime.fromisoformat(data["created_at"]),
            raw=data,
        )


@dataclass(frozen=True)
class DocumentPage:
    items: list[Document]
    next_cursor: str | None


@dataclass(frozen=True)
class DownloadUrl:
    url: str
    expires_at: datetime
    version: int


@dataclass(frozen=True)
class DownloadResult:
    path: Path | None
    """Where the file was written; None when the caller passed a file object."""
    filename: str
    """The server's name for the file (already stripped of any path)."""
    size: int
    sha256: str


@dataclass(frozen=True)
class ResumableUpload:
    """Where a resumable (tus) upload stands, as the server last reported it."""

    url: str
    offset: int
    length: int | None
    expires_at: datetime | None
    """Until when an unfinished upload can go on (None once it is complete)."""
    document_id: str | None
    """The stored document, once the last byte is in."""

    @classmethod
    def from_headers(cls, url: str, headers: httpx.Headers) -> ResumableUpload:
        try:
            length = headers.get("upload-length")
            expires = headers.get("upload-expires")
            return cls(
                url=url,
                offset=int(headers["upload-offset"]),
                length=int(length) if length is not None else None,
                expires_at=parsedate_to_datetime(expires) if expires else None,
                document_id=headers.get("medvault-document-id"),
            )
        except (KeyError, ValueError) as exc:
            raise VaultTransferError(f"The server's tus answer is malformed ({exc}).") from exc
