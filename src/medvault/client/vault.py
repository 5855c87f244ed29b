"""The client: one vault, one API token."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO
from urllib.parse import unquote

import httpx

from medvault.client.errors import (
    VaultClientError,
    VaultConnectionError,
    VaultTransferError,
    problem_from,
)
from medvault.client.models import (
    Document,
    DocumentPage,
    DownloadProgress,
    DownloadResult,
    DownloadUrl,
    Patient,
    ResumableUpload,
    UploadProgress,
    UploadSource,
    Version,
)
from medvault.client.resumable import (
    CHUNK_BYTES,
    RESUMABLE_CHUNK_BYTES,
    RESUMABLE_RETRIES,
    RESUMABLE_RETRY_DELAY,
    TUS_HEADERS,
    TusTransfer,
)

DEFAULT_TIMEOUT = 30.0
_SHA256_ETAG = re.compile(r'^(?:W/)?"([0-9a-f]{64})"$')
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*UTF-8''([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def _safe_filename(header: str | None) -> str | None:
    """The file name from Content-Disposition, reduced to a bare name that cannot escape."""
    if not header:
        return None
    match = _FILENAME_STAR.search(header)
    if match:
        name = unquote(match.group(1).strip(), errors="replace")
    else:
        plain = _FILENAME.search(header)
        if plain is None:
            return None
        name = re.sub(r"\\(.)", r"\1", plain.group(1))
    # Never trust a server-chosen name as a path: keep only its last component, and no
    # control characters or leading dots (which would make a hidden file).
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return name.strip().lstrip(".").strip() or None


def _expected_sha256(response: httpx.Response) -> str:
    match = _SHA256_ETAG.match(response.headers.get("etag", "").strip())
    if match is None:
        raise VaultTransferError(
            "The server sent no SHA-256 ETag, so the download cannot be verified."
        )
    return match.group(1)


def _remaining_size(handle: IO[bytes]) -> int | None:
    try:
        if not handle.seekable():
            return None
        here = handle.tell()
        end = handle.seek(0, os.SEEK_END)
        handle.seek(here)
    except (OSError, ValueError):
        return None
    return end - here


def _open_source(source: UploadSource, stack: contextlib.ExitStack) -> tuple[IO[bytes], str | None]:
    """The file to read and its default name (a path's last part, or the object's name)."""
    if isinstance(source, (str, os.PathLike)):
        return stack.enter_context(Path(source).open("rb")), Path(source).name
    name = getattr(source, "name", None)
    return source, Path(name).name if isinstance(name, str) else None


def _chunks(handle: IO[bytes], progress: UploadProgress | None) -> Iterator[bytes]:
    sent = 0
    while chunk := handle.read(CHUNK_BYTES):
        yield chunk
        # httpx has written the chunk to the socket by the time the generator resumes.
        sent += len(chunk)
        if progress is not None:
            progress(sent)


class VaultClient:
    """A connection to one vault with one API token. Use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "medvault-client"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ---------------------------------------------------------------------

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = self._http.send(request, stream=stream)
        except httpx.ConnectError as exc:
            raise VaultConnectionError(f"Cannot connect to {self.base_url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise VaultTransferError(f"{self.base_url} did not answer in time: {exc}") from exc
        except httpx.TransportError as exc:
            raise VaultTransferError(f"The connection to {self.base_url} failed: {exc}") from exc
        if response.is_error:
            if stream:
                response.read()
                response.close()
            raise problem_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(self._http.build_request(method, path, **kwargs)).json()

    @contextlib.contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        response = self._send(self._http.build_request(method, path, **kwargs), stream=True)
        try:
            yield response
        finally:
            response.close()

    # -- patients ----------------------------------------------------------------------

    def create_patient(
        self,
        *,
        system: str,
        value: str,
        family_name: str,
        given_name: str,
        birth_date: date | str,
    ) -> Patient:
        payload = {
            "identifier": {"system": system, "value": value},
            "family_name": family_name,
            "given_name": given_name,
            "birth_date": str(birth_date),
        }
        return Patient.from_json(self._json("POST", "/api/v1/patients", json=payload))

    def get_patient(self, patient_id: str) -> Patient:
        return Patient.from_json(self._json("GET", f"/api/v1/patients/{patient_id}"))

    def find_patient(self, system: str, value: str) -> Patient | None:
        page = self._json("GET", "/api/v1/patients", params={"identifier": f"{system}|{value}"})
        items = page["items"]
        return Patient.from_json(items[0]) if items else None

    # -- uploads -----------------------------------------------------------------------

    def _upload(
        self,
        path: str,
        source: UploadSource,
        params: dict[str, str | None],
        progress: UploadProgress | None,
    ) -> Document:
        with contextlib.ExitStack() as stack:
            handle, default_name = _open_source(source, stack)
            params["filename"] = params.get("filename") or default_name
            headers = {"Content-Type": "application/octet-stream"}
            size = _remaining_size(handle)
            if size is not None:
                # A known length lets the server refuse an oversized file before any byte.
                headers["Content-Length"] = str(size)
            request = self._http.build_request(
                "POST",
                path,
                params={k: v for k, v in params.items() if v is not None},
                content=_chunks(handle, progress),
                headers=headers,
            )
            return Document.from_json(self._send(request).json())

    def upload(
        self,
        source: UploadSource,
        *,
        patient_id: str,
        document_type: str,
        title: str | None = None,
        description: str | None = None,
        classification: str | None = None,
        filename: str | None = None,
        on_duplicate: str | None = None,
        progress: UploadProgress | None = None,
    ) -> Document:
        """Stream a file (path or binary file object) as a new document.

        ``progress`` is called with the total number of bytes sent so far.
        """
        params: dict[str, str | None] = {
            "patient_id": patient_id,
            "document_type": document_type,
            "title": title,
            "description": description,
            "classification": classification,
            "filename": filename,
            "on_duplicate": on_duplicate,
        }
        return self._upload("/api/v1/documents", source, params, progress)

    def add_version(
        self,
        document_id: str,
        source: UploadSource,
        *,
        filename: str | None = None,
        on_duplicate: str | None = None,
        progress: UploadProgress | None = None,
    ) -> Document:
        """Stream a file as the next version of a document; earlier versions stay."""
        params: dict[str, str | None] = {"filename": filename, "on_duplicate": on_duplicate}
        return self._upload(f"/api/v1/documents/{document_id}/versions", source, params, progress)

    # -- resumable uploads (tus 1.0.0) -------------------------------------------------

    def upload_resumable(
        self,
        source: UploadSource,
        *,
        patient_id: str,
        document_type: str,
        title: str | None = None,
        description: str | None = None,
        classification: str | None = None,
        filename: str | None = None,
        on_duplicate: str | None = None,
        chunk_size: int = RESUMABLE_CHUNK_BYTES,
        resume_url: str | None = None,
        on_created: Callable[[ResumableUpload], None] | None = None,
        progress: UploadProgress | None = None,
        retries: int = RESUMABLE_RETRIES,
        retry_delay: float = RESUMABLE_RETRY_DELAY,
    ) -> Document:
        """Upload a file (path or seekable binary file object) through tus, as a new document.

        Without ``resume_url`` the file is hashed first (its SHA-256 goes with the
        creation; the server refuses the document if the bytes it got differ), then a
        new upload is created and ``on_created`` receives it: keep its ``url`` to resume
        after an interruption. With ``resume_url`` the upload goes on from the offset the
        server reports, and the document fields given here are not sent again.

        Each PATCH sends at most ``chunk_size`` bytes, streamed from the file, with its
        SHA-256 in ``Upload-Checksum``. A failed request (connection lost, 5xx, 423 busy,
        409 wrong offset, 460 checksum) is followed by a pause and a HEAD to learn where
        the server stands; once ``retries`` tries again in a row have made no progress the
        last error is raised, and the upload stays resumable until it expires. ``progress`` is
        called with the number of bytes of the file the server has or is receiving.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1 byte")
        with contextlib.ExitStack() as stack:
            handle, default_name = _open_source(source, stack)
            transfer = TusTransfer(self, handle, chunk_size, progress, retries, retry_delay)
            if resume_url is None:
                fields = {
                    "patient_id": patient_id,
                    "document_type": document_type,
                    "title": title,
                    "description": description,
                    "classification": classification,
                    "filename": filename or default_name,
                    "on_duplicate": on_duplicate,
                    "sha256": transfer.file_sha256(),
                }
                upload = transfer.create({k: v for k, v in fields.items() if v is not None})
                if on_created is not None:
                    on_created(upload)
            else:
                upload = transfer.status(resume_url)
                if upload.length is not None and upload.length != transfer.size:
                    raise VaultTransferError(
                        f"The upload at {resume_url} is for a file of {upload.length} bytes; "
                        f"this one has {transfer.size}."
                    )
            document_id = transfer.run(upload)
        return self.get_document(document_id)

    def resumable_status(self, url: str) -> ResumableUpload:
        """Where a resumable upload stands (HEAD): VaultError 404 or 410 once it is gone."""
        url = self._upload_url(url)
        return ResumableUpload.from_headers(url, self._tus("HEAD", url).headers)

    def cancel_resumable(self, url: str) -> None:
        """End an unfinished upload (tus termination): the server deletes what it received."""
        self._tus("DELETE", self._upload_url(url))

    def _tus(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: Iterator[bytes] | None = None,
    ) -> httpx.Response:
        request = self._http.build_request(
            method, url, headers={**TUS_HEADERS, **(headers or {})}, content=content
        )
        return self._send(request)

    def _upload_url(self, url: str) -> str:
        """An upload URL, refused unless it is on this vault: the token goes with it."""
        base = self._http.base_url
        target = base.join(url)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            # The base class: a refusal, not a transfer failure worth retrying.
            raise VaultClientError(
                f"The upload URL {url} is not on {self.base_url}; the token is not sent there."
            )
        return str(target)

    # -- documents ---------------------------------------------------------------------

    def list_documents(
        self,
        *,
        patient_id: str | None = None,
        document_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> DocumentPage:
        params = {
            "patient_id": patient_id,
            "document_type": document_type,
            "limit": limit,
            "cursor": cursor,
        }
        page = self._json(
            "GET", "/api/v1/documents", params={k: v for k, v in params.items() if v is not None}
        )
        return DocumentPage(
            [Document.from_json(item) for item in page["items"]], page["next_cursor"]
        )

    def iter_documents(
        self,
        *,
        patient_id: str | None = None,
        document_type: str | None = None,
        page_size: int = 50,
    ) -> Iterator[Document]:
        """Every matching document, newest first, fetching pages as they are needed."""
        cursor: str | None = None
        while True:
            page = self.list_documents(
                patient_id=patient_id,
                document_type=document_type,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_document(self, document_id: str) -> Document:
        return Document.from_json(self._json("GET", f"/api/v1/documents/{document_id}"))

    def list_versions(self, document_id: str) -> list[Version]:
        body = self._json("GET", f"/api/v1/documents/{document_id}/versions")
        return [Version.from_json(item) for item in body["items"]]

    def delete(self, document_id: str, reason: str) -> Document:
        """Soft delete; the content answers 410 Gone until :meth:`restore`."""
        return Document.from_json(
            self._json("DELETE", f"/api/v1/documents/{document_id}", params={"reason": reason})
        )

    def restore(self, document_id: str) -> Document:
        return Document.from_json(self._json("POST", f"/api/v1/documents/{document_id}/restore"))

    def download_url(
        self, document_id: str, expires_in: int | None = None, version: int | None = None
    ) -> DownloadUrl:
        """A link that downloads the version without a token until it expires."""
        body = {"expires_in": expires_in, "version": version}
        data = self._json(
            "POST",
            f"/api/v1/documents/{document_id}/download-url",
            json={k: v for k, v in body.items() if v is not None},
        )
        return DownloadUrl(
            data["url"], datetime.fromisoformat(data["expires_at"]), int(data["version"])
        )

    # -- downloads ---------------------------------------------------------------------

    def download(
        self,
        document_id: str,
        dest: str | os.PathLike[str] | BinaryIO,
        *,
        version: int | None = None,
        progress: DownloadProgress | None = None,
        overwrite: bool = True,
    ) -> DownloadResult:
        """Stream a version's bytes to ``dest`` and verify them against the ETag.

        ``dest`` may be a file path, an existing directory (the server's file name is
        used inside it) or a binary file object. A path is only created once the bytes
        are verified; ``overwrite=False`` refuses to replace an existing file with
        :class:`FileExistsError`. A file object receives bytes as they arrive, so on
        :class:`VaultTransferError` the caller must discard what it got. ``progress`` is
        called with (bytes received so far, total bytes or None).
        """
        path = f"/api/v1/documents/{document_id}/content"
        if version is not None:
            path = f"/api/v1/documents/{document_id}/versions/{version}/content"
        # Identity encoding keeps Content-Length meaningful for progress and checks.
        with self._stream("GET", path, headers={"Accept-Encoding": "identity"}) as response:
            expected = _expected_sha256(response)
            filename = _safe_filename(response.headers.get("content-disposition")) or document_id
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            if not isinstance(dest, (str, os.PathLike)):
                size = self._receive(response, dest, expected, total, progress)
                return DownloadResult(None, filename, size, expected)
            target = Path(dest)
            if target.is_dir():
                target = target / filename
            if not overwrite and target.exists():
                raise FileExistsError(f"{target} already exists")
            temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
            try:
                with temp.open("xb") as handle:
                    size = self._receive(response, handle, expected, total, progress)
                    handle.flush()
                    os.fsync(handle.fileno())
                _place(temp, target, overwrite=overwrite)
            finally:
                temp.unlink(missing_ok=True)
            return DownloadResult(target, filename, size, expected)

    def _receive(
        self,
        response: httpx.Response,
        sink: IO[bytes],
        expected: str,
        total: int | None,
        progress: DownloadProgress | None,
    ) -> int:
        digest = hashlib.sha256()
        received = 0
        try:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                digest.update(chunk)
                sink.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
        except httpx.TransportError as exc:
            # The server cuts the stream when stored bytes fail their integrity check.
            raise VaultTransferError(
                f"The download broke off after {received} bytes ({exc}); nothing was kept."
            ) from exc
        if total is not None and received != total:
            raise VaultTransferError(f"The download ended after {received} of {total} bytes.")
        if digest.hexdigest() != expected:
            raise VaultTransferError("The downloaded bytes do not match the server's SHA-256.")
        return received


def _place(temp: Path, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        temp.replace(target)
        return
    try:
        # link() fails if the target appeared meanwhile, where rename would clobber it.
        os.link(temp, target)
    except FileExistsError:
        raise FileExistsError(f"{target} already exists") from None
    except OSError:
        # Filesystems without hard links: a check-then-rename is the best available.
        if target.exists():
            raise FileExistsError(f"{target} already exists") from None
        temp.replace(target)
