"""Real clients over real HTTP: tuspy (the tus project's Python client), unchanged, and a
client that vanishes mid-request; on SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import hashlib
import io
import socket
import time
import uuid
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from medvault.runtime import Runtime
from medvault.uploads.models import Upload
from tests.support.factories import create_patient, pdf_bytes
from tests.support.live_server import LiveServer
from tests.uploads.support import TUS, create


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def document_of(http: httpx.Client, upload_url: str | None) -> str:
    assert upload_url is not None
    status = http.head(upload_url, headers=TUS)
    assert status.status_code == 200, status.text
    return status.headers["Medvault-Document-Id"]


def test_tuspy_uploads_and_resumes(app: FastAPI, api_token: str, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {api_token}"}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        patient = http.post(
            "/api/v1/patients",
            json={
                "identifier": {
                    "system": "https://fhir.nhs.uk/Id/nhs-number",
                    "value": "9000000001",
                },
                "family_name": "Testperson",
                "given_name": "Tus",
                "birth_date": "1980-02-29",
            },
        ).json()["id"]
        tus = tus_client.TusClient(f"{server.url}/api/v1/uploads", headers=auth)
        meta = {"patient_id": patient, "document_type": "11502-2", "filename": "scan.pdf"}
        data = pdf_bytes(3 * 1024 * 1024 + 17)
        # Whole file, 512 KiB requests, each with its SHA-1 (tuspy's checksum).
        uploader = tus.uploader(
            file_stream=io.BytesIO(data),
            chunk_size=512 * 1024,
            metadata=meta,
            upload_checksum=True,
        )
        uploader.upload()
        document = document_of(http, uploader.url)
        assert sha256(http.get(f"/api/v1/documents/{document}/content").content) == sha256(data)

        # Stopped after two requests, then a new uploader finds the URL in its store and
        # goes on from the server's offset (tuspy's resume).
        # From a file: tuspy's fingerprint (the key of its URL store) closes a stream.
        other = pdf_bytes(2 * 1024 * 1024 + 5)
        path = tmp_path / "scan.pdf"
        path.write_bytes(other)
        storage = FileStorage(str(tmp_path / "tus-urls.json"))  # type: ignore[no-untyped-call]
        first = tus.uploader(
            file_path=str(path),
            chunk_size=300_000,
            metadata=meta,
            store_url=True,
            url_storage=storage,
        )
        first.upload(stop_at=600_000)
        assert first.url is not None
        assert int(http.head(first.url, headers=TUS).headers["Upload-Offset"]) == 600_000
        resumed = tus.uploader(
            file_path=str(path),
            chunk_size=300_000,
            metadata=meta,
            store_url=True,
            url_storage=storage,
        )
        assert resumed.url == first.url
        assert resumed.offset == 600_000
        resumed.upload()
        document = document_of(http, resumed.url)
        assert sha256(http.get(f"/api/v1/documents/{document}/content").content) == sha256(other)


def test_a_client_gone_mid_request_keeps_what_arrived(
    app: FastAPI, api_token: str, runtime: Runtime
) -> None:
    auth = {"Authorization": f"Bearer {api_token}"}
    data = pdf_bytes(3 * 1024 * 1024)
    sent = 1_234_567
    with LiveServer(app) as server, httpx.Client(base_url=server.url, headers=auth) as http:
        from fastapi.testclient import TestClient

        with TestClient(app) as local:
            local.headers.update(auth)
            patient = create_patient(local)
            url = create(local, patient, len(data)).headers["Location"]
        head = (
            f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_token}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(head.encode() + data[:sent])
            time.sleep(0.5)
        # The server records what arrived once it notices the client is gone.
        deadline = time.monotonic() + 15
        offset = 0
        while time.monotonic() < deadline:
            answer = http.head(url, headers=TUS)
            offset = int(answer.headers["Upload-Offset"])
            with runtime.clinical.read_session() as session:
                held = session.scalar(
                    select(Upload.lock_token).where(Upload.id == uuid.UUID(url.rsplit("/", 1)[1]))
                )
            if offset and held is None:
                break
            time.sleep(0.1)
        assert offset == sent
        done = http.patch(
            url,
            headers={
                **TUS,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
            content=data[offset:],
        )
        assert done.status_code == 204, done.text
        document = done.headers["Medvault-Document-Id"]
        assert sha256(http.get(f"/api/v1/documents/{document}/content").content) == sha256(data)
