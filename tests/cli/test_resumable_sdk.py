"""``VaultClient.upload_resumable``: tus against the app under uvicorn, and its retry
policy against a scripted server."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from medvault.client import (
    ResumableUpload,
    VaultClient,
    VaultClientError,
    VaultError,
)
from medvault.client import resumable as sdk
from tests.cli.tus_wire import TusWire, WireLog
from tests.support.factories import NHS_SYSTEM, pdf_bytes
from tests.support.live_server import LiveServer

MiB = 1024 * 1024
FAST = 0.01  # seconds: the first pause between tries


@pytest.fixture
def wire(app: FastAPI) -> WireLog:
    log = WireLog()
    app.add_middleware(TusWire, log=log)
    return log


@pytest.fixture
def vault(app: FastAPI, wire: WireLog, api_token: str) -> Iterator[VaultClient]:
    with LiveServer(app) as server, VaultClient(server.url, api_token) as client:
        yield client


@pytest.fixture
def patient_id(vault: VaultClient) -> str:
    return vault.create_patient(
        system=NHS_SYSTEM,
        value="9434765919",
        family_name="Testperson",
        given_name="Synthetic",
        birth_date="1980-02-29",
    ).id


def _metadata(header: str) -> dict[str, str]:
    pairs = (item.split(" ") for item in header.split(","))
    return {key: base64.b64decode(value).decode() for key, value in pairs}


def test_round_trip_in_checksummed_chunks(
    vault: VaultClient, wire: WireLog, patient_id: str, tmp_path: Path
) -> None:
    content = pdf_bytes(3 * MiB + 123)
    source = tmp_path / "ct-scan.pdf"
    source.write_bytes(content)
    created: list[ResumableUpload] = []
    seen: list[int] = []

    document = vault.upload_resumable(
        source,
        patient_id=patient_id,
        document_type="11502-2",
        title="CT",
        on_created=created.append,
        progress=seen.append,
        chunk_size=MiB,
        retry_delay=FAST,
    )

    assert document.sha256 == hashlib.sha256(content).hexdigest()
    assert (document.size, document.filename, document.title) == (len(content), source.name, "CT")
    copy = tmp_path / "copy.pdf"
    vault.download(document.id, copy)
    assert copy.read_bytes() == content

    [upload] = created
    assert upload.offset == 0 and upload.length == len(content)
    assert upload.expires_at is not None and upload.document_id is None
    assert wire.methods() == ["POST", "PATCH", "PATCH", "PATCH", "PATCH"]
    patches = wire.patches()
    assert [p.offset for p in patches] == [0, MiB, 2 * MiB, 3 * MiB]
    assert [p.received for p in patches] == [MiB, MiB, MiB, 123]
    assert all(p.checksum_matches for p in patches)  # Upload-Checksum: sha256 of each
    assert seen[0] == 0 and seen[-1] == len(content) and seen == sorted(seen)
    # Completed uploads still answer HEAD, with the document.
    assert vault.resumable_status(upload.url).document_id == document.id


def test_the_file_hash_is_declared_at_creation(
    vault: VaultClient, patient_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = pdf_bytes(200_000)
    source = tmp_path / "a.pdf"
    source.write_bytes(content)
    sent: list[httpx.Request] = []
    original = VaultClient._tus

    def spy(self: VaultClient, method: str, url: str, **kwargs: object) -> httpx.Response:
        response = original(self, method, url, **kwargs)  # type: ignore[arg-type]
        sent.append(response.request)
        return response

    monkeypatch.setattr(VaultClient, "_tus", spy)
    vault.upload_resumable(source, patient_id=patient_id, document_type="11502-2")
    fields = _metadata(sent[0].headers["upload-metadata"])
    assert fields == {
        "patient_id": patient_id,
        "document_type": "11502-2",
        "filename": "a.pdf",
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def test_a_damaged_chunk_is_refused_and_sent_again(
    vault: VaultClient,
    wire: WireLog,
    patient_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = pdf_bytes(2 * MiB + 10)
    source = tmp_path / "scan.pdf"
    source.write_bytes(content)
    monkeypatch.setattr(sdk, "_range_digest", _wrong_digest_on_calls({2}))

    document = vault.upload_resumable(
        source,
        patient_id=patient_id,
        document_type="11502-2",
        chunk_size=MiB,
        retry_delay=FAST,
    )

    assert document.sha256 == hashlib.sha256(content).hexdigest()
    patches = wire.patches()
    assert [(p.offset, p.status) for p in patches] == [
        (0, 204),
        (MiB, 460),  # the server checked the header against the bytes and kept nothing
        (MiB, 204),
        (2 * MiB, 204),
    ]
    assert wire.methods()[2:4] == ["PATCH", "HEAD"]  # where it stands, before a retry


def test_refusals_that_outlast_the_retries_leave_the_upload_resumable(
    vault: VaultClient,
    wire: WireLog,
    patient_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = pdf_bytes(2 * MiB + 10)
    source = tmp_path / "scan.pdf"
    source.write_bytes(content)
    created: list[ResumableUpload] = []
    monkeypatch.setattr(sdk, "_range_digest", _wrong_digest_on_calls({2, 3, 4}))

    with pytest.raises(VaultError) as raised:
        vault.upload_resumable(
            source,
            patient_id=patient_id,
            document_type="11502-2",
            on_created=created.append,
            retries=2,
            chunk_size=MiB,
            retry_delay=FAST,
        )
    assert raised.value.status == 460
    [upload] = created
    assert vault.resumable_status(upload.url).offset == MiB

    # A later call with the upload's URL sends the rest, and only the rest.
    monkeypatch.undo()
    before = len(wire.exchanges)
    document = vault.upload_resumable(
        source,
        patient_id=patient_id,
        document_type="11502-2",
        resume_url=upload.url,
        chunk_size=MiB,
        retry_delay=FAST,
    )
    assert document.sha256 == hashlib.sha256(content).hexdigest()
    assert [(p.offset, p.received) for p in wire.patches(before)] == [(MiB, MiB), (2 * MiB, 10)]
    assert "POST" not in wire.methods(before)


def test_a_changed_file_is_refused_at_completion(
    vault: VaultClient, patient_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole file's SHA-256, declared at creation, catches bytes that changed
    between chunks; the server refuses the upload for good."""
    content = pdf_bytes(2 * MiB)
    source = tmp_path / "scan.pdf"
    source.write_bytes(content)
    created: list[ResumableUpload] = []

    def tamper(upload: ResumableUpload) -> None:
        created.append(upload)
        with source.open("r+b") as handle:
            handle.seek(MiB + 5)
            handle.write(b"X")

    with pytest.raises(VaultError) as raised:
        vault.upload_resumable(
            source,
            patient_id=patient_id,
            document_type="11502-2",
            on_created=tamper,
            chunk_size=MiB,
            retry_delay=FAST,
        )
    assert raised.value.status == 460
    assert "SHA-256" in str(raised.value)
    with pytest.raises(VaultError) as gone:
        vault.resumable_status(created[0].url)
    assert gone.value.status == 410


def _wrong_digest_on_calls(calls: set[int]) -> Callable[[Iterator[bytes]], bytes]:
    """``_range_digest``, answering a wrong digest on the given (1-based) calls."""
    original = sdk._range_digest
    count = 0

    def digest(pieces: Iterator[bytes]) -> bytes:
        nonlocal count
        count += 1
        right = original(pieces)
        return hashlib.sha256(b"tampered").digest() if count in calls else right

    return digest


# -- the retry policy, against a scripted server ---------------------------------------


class ScriptedTus:
    """A tus server in a MockTransport that fails PATCHes as scripted."""

    def __init__(self, content: bytes, failures: list[int | type[Exception]]) -> None:
        self.content = content
        self.failures = failures
        self.offset = 0
        self.log: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request.method)
        tus = {"Tus-Resumable": "1.0.0"}
        if request.method == "POST" and request.url.path == "/api/v1/uploads":
            return httpx.Response(
                201, headers={**tus, "Location": "/api/v1/uploads/u1", "Upload-Offset": "0"}
            )
        if request.method == "HEAD":
            return httpx.Response(200, headers={**tus, **self._where()})
        if request.method == "PATCH":
            body = request.read()
            if self.failures:
                failure = self.failures.pop(0)
                if not isinstance(failure, int):
                    raise failure("scripted")
                problem = {"type": "urn:medvault:problem:upload-offset-mismatch", "title": "x"}
                if failure == 409:
                    return httpx.Response(409, json=problem, headers=tus)
                return httpx.Response(failure, json={"title": "scripted"}, headers=tus)
            assert int(request.headers["upload-offset"]) == self.offset
            self.offset += len(body)
            return httpx.Response(204, headers={**tus, **self._where()})
        if request.method == "GET":
            return httpx.Response(200, json=_document_json(self.content))
        raise AssertionError(request)

    def _where(self) -> dict[str, str]:
        headers = {"Upload-Offset": str(self.offset), "Upload-Length": str(len(self.content))}
        if self.offset == len(self.content):
            headers["Medvault-Document-Id"] = "d1"
        return headers


def _document_json(content: bytes) -> dict[str, object]:
    return {
        "id": "d1",
        "patient_id": "p1",
        "version": 1,
        "title": "t",
        "document_type": "11502-2",
        "filename": "a.pdf",
        "content_type": "application/pdf",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "classification": "normal",
        "status": "current",
        "created_at": "2025-01-01T00:00:00+00:00",
    }


def _scripted(server: ScriptedTus) -> VaultClient:
    return VaultClient("http://vault.test", "mv_token", transport=httpx.MockTransport(server))


def test_busy_conflicts_server_errors_and_broken_connections_are_retried(
    tmp_path: Path,
) -> None:
    content = pdf_bytes(3000)
    source = tmp_path / "a.pdf"
    source.write_bytes(content)
    server = ScriptedTus(content, [423, 503, httpx.ReadError, 409, httpx.ConnectError, 500])
    with _scripted(server) as vault:
        document = vault.upload_resumable(
            source, patient_id="p1", document_type="11502-2", chunk_size=1000, retry_delay=0.001
        )
    assert document.sha256 == hashlib.sha256(content).hexdigest()
    # Every failed PATCH is followed by a HEAD; three PATCHes got through.
    assert server.log == ["POST", *["PATCH", "HEAD"] * 6, "PATCH", "PATCH", "PATCH", "GET"]


def test_final_refusals_are_not_retried_and_retries_are_bounded(tmp_path: Path) -> None:
    source = tmp_path / "a.pdf"
    source.write_bytes(pdf_bytes(3000))
    refused = ScriptedTus(source.read_bytes(), [415])
    with _scripted(refused) as vault, pytest.raises(VaultError) as raised:
        vault.upload_resumable(source, patient_id="p1", document_type="11502-2")
    assert raised.value.status == 415 and refused.log == ["POST", "PATCH"]

    flaky = ScriptedTus(source.read_bytes(), [503] * 10)
    with _scripted(flaky) as vault, pytest.raises(VaultError) as raised:
        vault.upload_resumable(
            source, patient_id="p1", document_type="11502-2", retries=3, retry_delay=0.001
        )
    assert raised.value.status == 503
    assert flaky.log == ["POST", *["PATCH", "HEAD"] * 3, "PATCH"]


def test_the_token_goes_to_no_other_host(tmp_path: Path) -> None:
    source = tmp_path / "a.pdf"
    source.write_bytes(pdf_bytes(3000))
    server = ScriptedTus(source.read_bytes(), [])
    started = time.monotonic()
    with _scripted(server) as vault, pytest.raises(VaultClientError, match="not on"):
        vault.upload_resumable(
            source,
            patient_id="p1",
            document_type="11502-2",
            resume_url="https://elsewhere.test/api/v1/uploads/u1",
        )
    assert server.log == []
    assert time.monotonic() - started < 1  # refused at once, not retried
