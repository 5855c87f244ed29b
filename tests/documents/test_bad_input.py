"""Bad input gets a clear problem+json error and changes nothing, on both backends."""

from __future__ import annotations

import os
import select
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.runtime import Runtime, build_runtime
from tests.support.backends import Backend
from tests.support.factories import create_patient, pdf_bytes, upload_multipart, upload_raw
from tests.support.inspect import StoredState, stored_state
from tests.support.live_server import LiveServer

PROBLEM = "urn:medvault:problem:"
ELF = b"\x7fELF\x02\x01\x01\x00" + os.urandom(4000)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    assert body["title"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


@pytest.fixture
def patient(client: TestClient) -> str:
    return create_patient(client)


@pytest.fixture
def empty_state(runtime: Runtime, patient: str) -> StoredState:
    state = stored_state(runtime)
    assert state.documents == 0 and state.blobs == 0
    return state


def test_executable_named_pdf_is_415(
    client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    for response in (
        upload_multipart(client, patient, ELF, filename="x.pdf"),
        upload_raw(client, patient, ELF, filename="x.pdf", content_type="application/pdf"),
    ):
        body = assert_problem(response, 415, "unsupported-media-type")
        assert "application/pdf" in body["allowed_types"]
    assert stored_state(runtime) == empty_state


def test_text_file_is_415(
    client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    assert_problem(
        upload_raw(client, patient, b"just some notes\n" * 10), 415, "unsupported-media-type"
    )
    assert stored_state(runtime) == empty_state


@pytest.fixture
def small_limit_client(backend: Backend, api_token: str, runtime: Runtime) -> Iterator[TestClient]:
    settings = backend.settings.model_copy(update={"max_upload_bytes": 100_000})
    small = build_runtime(settings)
    app: FastAPI = create_app(runtime=small)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {api_token}"
        yield test_client
    small.close()


def test_too_large_with_content_length_is_413(
    small_limit_client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    body = assert_problem(
        upload_raw(small_limit_client, patient, pdf_bytes(100_001)), 413, "payload-too-large"
    )
    assert body["max_bytes"] == 100_000
    assert_problem(
        upload_multipart(small_limit_client, patient, pdf_bytes(150_000)), 413, "payload-too-large"
    )
    assert stored_state(runtime) == empty_state


def test_exactly_the_limit_is_accepted(small_limit_client: TestClient, patient: str) -> None:
    assert upload_raw(small_limit_client, patient, pdf_bytes(100_000)).status_code == 201


def test_chunked_body_without_length_stops_at_the_limit(
    small_limit_client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield b"%PDF-1.7\n"
        for _ in range(10_000):  # would be 80 MB if the server read it all
            sent += 8192
            yield os.urandom(8192)

    response = small_limit_client.post(
        "/api/v1/documents",
        params={"patient_id": patient, "document_type": "11502-2"},
        content=endless(),
        headers={"content-type": "application/pdf"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    assert stored_state(runtime) == empty_state


def test_chunked_upload_over_real_http_is_cut_off_early(
    backend: Backend, api_token: str, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    """Over a real socket: the 413 arrives while the client is still sending."""
    settings = backend.settings.model_copy(update={"max_upload_bytes": 100_000})
    small = build_runtime(settings)
    total = 80 * 1024 * 1024
    with LiveServer(create_app(runtime=small)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            f"POST /api/v1/documents?patient_id={patient}&document_type=11502-2 HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {api_token}\r\n"
            "Content-Type: application/pdf\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%PDF-1.7\n" + os.urandom(65536 - 9)
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        sent = 0
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
        sock.close()
    small.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    # Socket buffers absorb a few MB at most; the server must not have read the rest.
    assert sent < 16 * 1024 * 1024, sent
    assert stored_state(runtime) == empty_state


def test_missing_file_is_400(
    client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    response = client.post(
        "/api/v1/documents",
        data={"patient_id": patient, "document_type": "11502-2"},
        files={"other": ("x.txt", b"", "text/plain")},
    )
    assert_problem(response, 400, "malformed-multipart")
    only_fields = client.post(
        "/api/v1/documents",
        content=(
            b'--b\r\nContent-Disposition: form-data; name="patient_id"\r\n\r\n'
            + patient.encode()
            + b"\r\n--b--\r\n"
        ),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_problem(only_fields, 400, "missing-file")
    assert_problem(upload_raw(client, patient, b""), 400, "empty-file")
    assert stored_state(runtime) == empty_state


def test_unknown_patient_is_422(
    client: TestClient, runtime: Runtime, empty_state: StoredState
) -> None:
    ghost = str(uuid.uuid4())
    assert_problem(upload_multipart(client, ghost, pdf_bytes()), 422, "unknown-patient")
    assert_problem(upload_raw(client, ghost, pdf_bytes()), 422, "unknown-patient")
    assert stored_state(runtime) == empty_state


def test_invalid_fields_are_422_with_field_errors(
    client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    body = assert_problem(
        upload_multipart(client, patient, pdf_bytes(), document_type="blood"),
        422,
        "validation-error",
    )
    assert any(err["loc"] == ["document_type"] for err in body["errors"])
    body = assert_problem(
        upload_multipart(client, "not-a-uuid", pdf_bytes()), 422, "validation-error"
    )
    assert any(err["loc"] == ["patient_id"] for err in body["errors"])
    assert_problem(
        upload_multipart(client, patient, pdf_bytes(), classification="secret"),
        422,
        "validation-error",
    )
    assert stored_state(runtime) == empty_state


def test_broken_multipart_is_400(
    client: TestClient, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    truncated = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n'
        + pdf_bytes(3000)
    )
    response = client.post(
        "/api/v1/documents",
        params={"patient_id": patient, "document_type": "11502-2"},
        content=truncated,
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert_problem(response, 400, "malformed-multipart")
    no_boundary = client.post(
        "/api/v1/documents", content=b"x", headers={"content-type": "multipart/form-data"}
    )
    assert_problem(no_boundary, 400, "malformed-multipart")
    assert stored_state(runtime) == empty_state


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/documents/not-a-uuid",
        "/api/v1/documents/00000000-0000-0000-0000-000000000000",
        "/api/v1/documents/not-a-uuid/content",
        "/api/v1/documents/00000000-0000-0000-0000-000000000000/content",
        "/api/v1/documents/00000000-0000-0000-0000-000000000000/versions",
        "/api/v1/documents/00000000-0000-0000-0000-000000000000/versions/1/content",
        "/api/v1/patients/12345",
        "/api/v1/patients/00000000-0000-0000-0000-000000000000",
        "/api/v1/no-such-route",
    ],
)
def test_malformed_or_unknown_ids_are_404(client: TestClient, path: str) -> None:
    assert_problem(client.get(path), 404, "not-found")


def test_version_number_that_is_not_a_number_is_404(client: TestClient, patient: str) -> None:
    doc = upload_multipart(client, patient, pdf_bytes()).json()
    assert_problem(
        client.get(f"/api/v1/documents/{doc['id']}/versions/x/content"), 404, "not-found"
    )
    assert_problem(
        client.get(f"/api/v1/documents/{doc['id']}/versions/9/content"), 404, "not-found"
    )


def test_new_version_of_unknown_document_is_404(
    client: TestClient, runtime: Runtime, empty_state: StoredState
) -> None:
    response = client.post(
        f"/api/v1/documents/{uuid.uuid4()}/versions",
        files={"file": ("a.pdf", pdf_bytes(), "application/pdf")},
    )
    assert_problem(response, 404, "not-found")
    assert stored_state(runtime) == empty_state


def test_no_token_and_bad_token_are_401(anon_client: TestClient) -> None:
    body = assert_problem(anon_client.get("/api/v1/documents"), 401, "unauthorized")
    assert "Bearer" in body["detail"]
    bad = anon_client.get(
        "/api/v1/documents", headers={"Authorization": "Bearer mvt_nope" + "x" * 40}
    )
    assert_problem(bad, 401, "unauthorized")
    assert bad.headers["www-authenticate"].startswith("Bearer")
    response = anon_client.post(
        "/api/v1/documents", content=pdf_bytes(), headers={"content-type": "application/pdf"}
    )
    assert_problem(response, 401, "unauthorized")


def test_bad_list_parameters_are_clear(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/documents", params={"limit": 0}), 422, "validation-error")
    assert_problem(client.get("/api/v1/documents", params={"limit": 201}), 422, "validation-error")
    assert_problem(
        client.get("/api/v1/documents", params={"cursor": "garbage!"}), 400, "invalid-cursor"
    )
    assert_problem(
        client.get("/api/v1/documents", params={"status": "weird"}), 422, "validation-error"
    )


def test_delete_needs_a_reason(client: TestClient, patient: str) -> None:
    doc = upload_multipart(client, patient, pdf_bytes()).json()
    assert_problem(client.delete(f"/api/v1/documents/{doc['id']}"), 422, "validation-error")
    assert client.get(f"/api/v1/documents/{doc['id']}").json()["status"] == "current"


def test_wrong_method_is_405(client: TestClient) -> None:
    assert_problem(client.put("/api/v1/documents"), 405, "method-not-allowed")


def test_client_vanishing_mid_upload_leaves_nothing(
    app: FastAPI, api_token: str, runtime: Runtime, patient: str, empty_state: StoredState
) -> None:
    with LiveServer(app) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            f"POST /api/v1/documents?patient_id={patient}&document_type=11502-2 HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {api_token}\r\n"
            f"Content-Type: application/pdf\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n".encode()
        )
        # 9 of the promised 10 MiB: enough for an S3 multipart upload to be under way.
        sock.sendall(b"%PDF-1.7\n" + os.urandom(9 * 1024 * 1024))
        deadline = time.monotonic() + 10
        while stored_state(runtime).partial_uploads == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until the server has really started the blob
        sock.close()
        deadline = time.monotonic() + 10
        while stored_state(runtime) != empty_state and time.monotonic() < deadline:
            time.sleep(0.05)
    assert stored_state(runtime) == empty_state
