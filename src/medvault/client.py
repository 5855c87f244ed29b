"""A small Python SDK for the medvault REST API (v1).

Uploads and downloads stream in 1 MiB chunks, so a file of any size costs the same
memory. A download is written to a temporary file next to its destination and only
renamed into place once its SHA-256 matches the ETag the server sent: a broken or
tampered transfer never leaves a plausible-looking file behind.

    with VaultClient("https://vault.example", token) as vault:
        patient = vault.create_patient(system=NHS, value="9434765919", family_name="Doe",
                                       given_name="Jo", birth_date="1980-02-29")
        document = vault.upload("scan.pdf", patient_id=patient.id, document_type="11502-2")
        vault.download(document.id, "copy.pdf")

Large files go through the vault's tus 1.0.0 endpoint with :meth:`VaultClient.upload_resumable`:
one PATCH per ``chunk_size`` bytes, each carrying its SHA-256, and the whole file's SHA-256
declared up front. A broken request is retried from where the server says it stands, and
an interrupted upload continues later from its URL (``resume_url``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO
from urllib.parse import unquote

import httpx

CHUNK_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
# Resumable uploads: bytes per PATCH (what an interruption can cost), consecutive failed
# tries before giving up, and the first pause between tries (doubled each time, capped).
RESUMABLE_CHUNK_BYTES = 8 * CHUNK_BYTES
RESUMABLE_RETRIES = 6
RESUMABLE_RETRY_DELAY = 0.5
_MAX_RETRY_DELAY = 8.0
_TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
_OFFSET_MISMATCH = "urn:medvault:problem:upload-offset-mismatch"
_SHA256_ETAG = re.compile(r'^(?:W/)?"([0-9a-f]{64})"$')
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*UTF-8''([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)

UploadSource = str | os.PathLike[str] | BinaryIO
UploadProgress = Callable[[int], None]
DownloadProgress = Callable[[int, int | None], None]


class VaultClientError(Exception):
    """Base class of every error this SDK raises."""


class VaultError(VaultClientError):
    """The server answered with an RFC 9457 problem (or another error status)."""

    def __init__(
        self,
        status: int,
        problem_type: str,
        title: str,
        detail: str | None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{title} ({status})" + (f": {detail}" if detail else ""))
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail
        self.extensions = extensions or {}


class VaultConnectionError(VaultClientError):
    """No connection to the vault could be made (refused, DNS, TLS, connect timeout)."""


class VaultTransferError(VaultClientError):
    """A transfer broke off or its bytes failed verification; nothing was kept."""


class VaultSourceError(VaultClientError):
    """The file being uploaded changed (it shrank) while it was read."""


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


def _problem(response: httpx.Response) -> VaultError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("title" in body or "type" in body):
        extensions = {
            k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")
        }
        return VaultError(
            status,
            str(body.get("type", "about:blank")),
            str(body.get("title") or response.reason_phrase),
            str(body["detail"]) if body.get("detail") is not None else None,
            extensions,
        )
    # Not a problem document (a proxy's HTML error page, say): keep a short excerpt.
    excerpt = response.text.strip()[:200] or None
    return VaultError(status, "about:blank", response.reason_phrase or "Error", excerpt)


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
            raise _problem(response)
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
            transfer = _TusTransfer(self, handle, chunk_size, progress, retries, retry_delay)
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
            method, url, headers={**_TUS_HEADERS, **(headers or {})}, content=content
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


class _TusTransfer:
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
