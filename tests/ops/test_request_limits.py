"""Body and head caps on every route, on both backends (issue 9, defect 5).

Memory is measured on a real process in tests/ops/test_server_limits.py; these
check which routes are capped, and how the refusal looks.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi.testclient import TestClient

from tests.support.factories import create_patient, pdf_bytes, upload_raw

MiB = 1024 * 1024
TOO_LARGE = "urn:medvault:problem:payload-too-large"


def stream(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A body without Content-Length (httpx sends a generator chunked)."""
    yield b'{"refresh_token":"'
    for _ in range(total // chunk):
        yield b"0" * chunk


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == TOO_LARGE


def test_json_bodies_over_the_cap_are_refused_before_login(anon_client: TestClient) -> None:
    body = b'{"refresh_token":"' + b"0" * MiB + b'"}'
    assert_too_large(
        anon_client.post(
            "/api/v1/auth/refresh", content=body, headers={"content-type": "application/json"}
        )
    )
    assert_too_large(
        anon_client.post(
            "/api/v1/auth/refresh",
            content=stream(4 * MiB),
            headers={"content-type": "application/json"},
        )
    )
    # The login form and the portal's forms are bodies like any other.
    assert_too_large(
        anon_client.post(
            "/api/v1/auth/token",
            content=b"username=x&password=" + b"p" * MiB,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    )
    assert_too_large(
        anon_client.post(
            "/login",
            content=b"username=x&password=" + b"p" * MiB,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    )


def test_json_bodies_over_the_cap_are_refused_with_a_token(client: TestClient) -> None:
    assert_too_large(
        client.post(
            "/api/v1/patients",
            content=stream(2 * MiB),
            headers={"content-type": "application/json"},
        )
    )
    answer = client.put(
        "/fhir/DocumentReference/0b7b7f3e-6d0e-4d8e-9b8e-3f1c2d4e5f60",
        content=stream(2 * MiB),
        headers={"content-type": "application/fhir+json"},
    )
    assert answer.status_code == 413  # in FHIR's dialect (an OperationOutcome)


def test_a_body_just_under_the_cap_still_reaches_the_route(anon_client: TestClient) -> None:
    body = b'{"refresh_token":"' + b"0" * (MiB - 100) + b'"}'
    answer = anon_client.post(
        "/api/v1/auth/refresh", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code in (401, 422)  # judged by the route, not the cap


def test_uploads_keep_their_own_larger_limit(client: TestClient) -> None:
    patient = create_patient(client)
    big = pdf_bytes(3 * MiB)  # three times the JSON cap, far below MAX_UPLOAD_BYTES
    uploaded = upload_raw(client, patient, big)
    assert uploaded.status_code == 201, uploaded.text
    document = uploaded.json()["id"]
    version = client.post(
        f"/api/v1/documents/{document}/versions",
        content=pdf_bytes(3 * MiB),
        headers={"content-type": "application/pdf"},
    )
    assert version.status_code == 201, version.text


def test_oversized_heads_are_431(anon_client: TestClient) -> None:
    answer = anon_client.get("/healthz", headers={"X-Padding": "a" * 20_000})
    assert answer.status_code == 431
    assert answer.json()["type"] == "urn:medvault:problem:headers-too-large"
    assert anon_client.get("/healthz", headers={"X-Padding": "a" * 2_000}).status_code == 200
