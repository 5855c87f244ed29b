"""The Python SDK (``medvault.client``) against the app under uvicorn."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from medvault.client import CHUNK_BYTES, VaultClient, VaultError, VaultTransferError
from tests.support.factories import NHS_SYSTEM, pdf_bytes, png_bytes
from tests.support.live_server import LiveServer

MiB = 1024 * 1024


@pytest.fixture
def vault(app: FastAPI, api_token: str) -> Iterator[VaultClient]:
    with LiveServer(app) as server, VaultClient(server.url, api_token) as client:
        yield client


@pytest.fixture
def patient_id(vault: VaultClient) -> str:
    patient = vault.create_patient(
        system=NHS_SYSTEM,
        value="9434765919",
        family_name="Testperson",
        given_name="Synthetic",
        birth_date="1980-02-29",
    )
    return patient.id


def test_patients(vault: VaultClient, patient_id: str) -> None:
    assert vault.get_patient(patient_id).family_name == "Testperson"
    found = vault.find_patient(NHS_SYSTEM, "9434765919")
    assert found is not None and found.id == patient_id
    assert vault.find_patient(NHS_SYSTEM, "0000000000") is None
    with pytest.raises(VaultError) as raised:
        vault.create_patient(
            system=NHS_SYSTEM,
            value="9434765919",
            family_name="X",
            given_name="Y",
            birth_date="1990-01-01",
        )
    assert raised.value.status == 409
    assert raised.value.problem_type == "urn:medvault:problem:duplicate-patient"
    assert raised.value.extensions["existing_patient_id"] == patient_id


def test_upload_streams_in_chunks_and_downloads_verified(
    vault: VaultClient, patient_id: str, tmp_path: Path
) -> None:
    content = pdf_bytes(3 * MiB + 7)
    source = tmp_path / "scan.pdf"
    source.write_bytes(content)
    sent: list[int] = []
    document = vault.upload(
        source, patient_id=patient_id, document_type="11502-2", title="Scan", progress=sent.append
    )
    # One progress call per 1 MiB chunk read from disk, each after it went out.
    assert sent == [CHUNK_BYTES, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES, len(content)]
    assert document.size == len(content)
    assert document.sha256 == hashlib.sha256(content).hexdigest()
    assert document.filename == "scan.pdf"

    received: list[tuple[int, int | None]] = []
    result = vault.download(
        document.id, tmp_path / "copy.pdf", progress=lambda *a: received.append(a)
    )
    assert result.path == tmp_path / "copy.pdf"
    assert result.path.read_bytes() == content
    assert received[-1] == (len(content), len(content))

    into_dir = tmp_path / "folder"
    into_dir.mkdir()
    placed = vault.download(document.id, into_dir)
    assert placed.path == into_dir / "scan.pdf"
    with pytest.raises(FileExistsError):
        vault.download(document.id, into_dir, overwrite=False)
    assert sorted(p.name for p in into_dir.iterdir()) == ["scan.pdf"]

    buffer = io.BytesIO()
    assert vault.download(document.id, buffer).path is None
    assert buffer.getvalue() == content


def test_file_objects_versions_and_listing(
    vault: VaultClient, patient_id: str, tmp_path: Path
) -> None:
    first = vault.upload(
        io.BytesIO(pdf_bytes(5000)),
        patient_id=patient_id,
        document_type="11502-2",
        filename="a.pdf",
    )
    image = png_bytes()
    second = vault.add_version(first.id, io.BytesIO(image), filename="a.png")
    assert (second.id, second.version, second.content_type) == (first.id, 2, "image/png")
    assert [v.version for v in vault.list_versions(first.id)] == [2, 1]

    older = io.BytesIO()
    vault.download(first.id, older, version=1)
    assert hashlib.sha256(older.getvalue()).hexdigest() == first.sha256

    others = [
        vault.upload(io.BytesIO(pdf_bytes(2000)), patient_id=patient_id, document_type="18842-5").id
        for _ in range(3)
    ]
    page = vault.list_documents(patient_id=patient_id, limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None
    walked = [d.id for d in vault.iter_documents(patient_id=patient_id, page_size=2)]
    assert walked == [*reversed(others), first.id]
    summaries = list(vault.iter_documents(patient_id=patient_id, document_type="18842-5"))
    assert sorted(d.id for d in summaries) == sorted(others)


def test_delete_restore_and_download_url(vault: VaultClient, patient_id: str) -> None:
    content = pdf_bytes(4000)
    document = vault.upload(io.BytesIO(content), patient_id=patient_id, document_type="11502-2")
    assert vault.delete(document.id, "duplicate scan").status == "deleted"
    with pytest.raises(VaultError) as raised:
        vault.download(document.id, io.BytesIO())
    assert raised.value.status == 410
    assert vault.restore(document.id).status == "current"

    link = vault.download_url(document.id, expires_in=60)
    assert link.version == 1
    response = httpx.get(link.url)  # no token: the signature is the credential
    assert response.status_code == 200 and response.content == content


def test_a_checksum_mismatch_keeps_nothing(tmp_path: Path) -> None:
    """A body that does not match the ETag is never renamed into place."""
    body = pdf_bytes(3000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=body,
            headers={
                "ETag": f'"{"0" * 64}"',
                "Content-Disposition": 'attachment; filename="x.pdf"',
            },
        )

    with (
        VaultClient(
            "http://vault.test", "mv_token", transport=httpx.MockTransport(handler)
        ) as client,
        pytest.raises(VaultTransferError, match="SHA-256"),
    ):
        client.download("doc", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_server_filenames_cannot_escape_the_folder(tmp_path: Path) -> None:
    body = pdf_bytes(100)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=body,
            headers={
                "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                "Content-Disposition": "attachment; filename*=UTF-8''..%2F..%2F.evil%0A.pdf",
            },
        )

    target = tmp_path / "inside"
    target.mkdir()
    with VaultClient(
        "http://vault.test", "mv_token", transport=httpx.MockTransport(handler)
    ) as client:
        result = client.download("doc", target)
    assert result.path == target / "evil.pdf"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.pdf", "inside"]
