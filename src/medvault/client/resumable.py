"""Resumable uploads over tus 1.0.0: one file's trip, PATCH by PATCH, and how failures
are retried (README, "The resumable upload client is hand-written")."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, TYPE_CHECKING

import httpx

from medvault.client.errors import (
    VaultClientError,
    VaultConnectionError,
    VaultError,
    VaultSourceError,
    VaultTransferError,
)
from medvault.client.models import ResumableUpload, UploadProgress

if TYPE_CHECKING:
    from medvault.client.vault import VaultClient

CHUNK_BYTES = 1024 * 1024
# Bytes per PATCH (what an interruption can cost), consecutive failed tries before
# giving up, and the first pause between tries (doubled each time, capped).
RESUMABLE_CHUNK_BYTES = 8 * CHUNK_BYTES
RESUMABLE_RETRIES = 6
RESUMABLE_RETRY_DELAY = 0.5
_MAX_RETRY_DELAY = 8.0
TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
_OFFSET_MISMATCH = "urn:medvault:problem:upload-offset-mismatch"


class TusTransfer:
    """One file's trip through a tus upload: PATCHes from the server's offset, each with
    its SHA-256, and after any failure a pause and a HEAD to learn where the server stands.

    The file is read twice per PATCH, once to hash the chunk (the header goes before the
    body) and once to send it, so memory stays at one read buffer whatever the chunk size.
    """

    def __init__(
        self,
        vault: VaultClient,
        handle: IO[bytes],
        chunk_size: int,
        progress: UploadProgress | None,
        retries: int,
        retry_delay: float,
    ) -> None:
        if not handle.seekable():
            raise ValueError("a resumable upload needs a seekable file")
        self.vault = vault
        self.handle = handle
        self.start = handle.tell()  # a file object is uploaded from where it stands
        self.size = handle.seek(0, os.SEEK_END) - self.start
        self.chunk_size = chunk_size
        self.progress = progress
        self.retries = retries
        self.retry_delay = retry_delay
        self.failures = 0  # in a row, without progress

    def file_sha256(self) -> str:
        digest = hashlib.sha256()
        for piece in self._read(0, self.size):
            digest.update(piece)
        return digest.hexdigest()

    def create(self, fields: dict[str, str]) -> ResumableUpload:
        metadata = ",".join(
            f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in fields.items()
        )
        headers = {"Upload-Length": str(self.size), "Upload-Metadata": metadata}
        while True:
            try:
                # A retried creation may leave an unused upload behind; it expires.
                response = self.vault._tus("POST", "/api/v1/uploads", headers=headers)
                break
            except (VaultConnectionError, VaultTransferError, VaultError) as exc:
                self._failed(exc)
        location = response.headers.get("location")
        if not location:
            raise VaultTransferError("The server created an upload but sent no Location.")
        url = self.vault._upload_url(str(response.request.url.join(location)))
        return replace(ResumableUpload.from_headers(url, response.headers), length=self.size)

    def status(self, url: str, cause: VaultClientError | None = None) -> ResumableUpload:
        """HEAD, retried like any request; ``cause`` is raised instead if the upload is gone."""
        while True:
            try:
                return self.vault.resumable_status(url)
            except VaultError as exc:
                if exc.status in (404, 410) and isinstance(cause, VaultError):
                    # The failure that ended it says why (e.g. the file's SHA-256 differed).
                    raise cause from exc
                self._failed(exc)
            except (VaultConnectionError, VaultTransferError) as exc:
                self._failed(exc)

    def run(self, upload: ResumableUpload) -> str:
        """Send what the server lacks; the stored document's id."""
        offset, document_id = upload.offset, upload.document_id
        self._report(offset)
        while document_id is None:
            try:
                answer = ResumableUpload.from_headers(upload.url, self._patch(upload.url, offset))
            except (VaultConnectionError, VaultTransferError, VaultError) as exc:
                self._failed(exc)
                now = self.status(upload.url, cause=exc)
                if now.offset > offset:  # the lost answer's bytes did arrive
                    self.failures = 0
                offset, document_id = now.offset, now.document_id
                self._report(offset)
                continue
            if answer.offset <= offset and answer.document_id is None:
                self._failed(VaultTransferError(f"The upload made no progress at {offset}."))
            else:
                self.failures = 0
            offset, document_id = answer.offset, answer.document_id
        self._report(self.size)
        return document_id

    def _patch(self, url: str, offset: int) -> httpx.Headers:
        length = min(self.chunk_size, self.size - offset)
        digest = _range_digest(self._read(offset, length))
        headers = {
            "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha256 {base64.b64encode(digest).decode()}",
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length),
        }
        body = self._read(offset, length, report=True)
        return self.vault._tus("PATCH", url, headers=headers, content=body).headers

    def _read(self, offset: int, length: int, *, report: bool = False) -> Iterator[bytes]:
        self.handle.seek(self.start + offset)
        left = length
        while left > 0:
            piece = self.handle.read(min(CHUNK_BYTES, left))
            if not piece:
                raise VaultSourceError("The file got shorter while it was being uploaded.")
            left -= len(piece)
            yield piece
            if report:  # the piece has gone out once the generator resumes
                self._report(offset + length - left)

    def _report(self, position: int) -> None:
        if self.progress is not None:
            self.progress(position)

    def _failed(self, exc: VaultClientError) -> None:
        """Pause before the next try, or raise ``exc`` if trying again cannot help or
        the tries ran out."""
        if isinstance(exc, VaultError) and not _worth_retrying(exc):
            raise exc
        self.failures += 1
        if self.failures > self.retries:
            raise exc
        if isinstance(exc, VaultError) and exc.problem_type == _OFFSET_MISMATCH:
            return  # nothing to wait for: the HEAD that follows says where to go on
        # Doubling pauses with up to 25% jitter, so clients cut off together don't
        # come back together.
        delay = min(self.retry_delay * 2 ** (self.failures - 1), _MAX_RETRY_DELAY)
        time.sleep(delay * (1 + secrets.randbelow(250) / 1000))


def _range_digest(pieces: Iterator[bytes]) -> bytes:
    """SHA-256 of one PATCH's bytes, for its Upload-Checksum."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.digest()


def _worth_retrying(exc: VaultError) -> bool:
    """Busy (423), too many requests, a wrong offset (409: HEAD says where), a chunk
    damaged on the way (460) and server errors; every other refusal is final."""
    if exc.status == 409:
        return exc.problem_type == _OFFSET_MISMATCH
    return exc.status in (423, 429, 460) or exc.status >= 500
