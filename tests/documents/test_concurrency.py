"""Concurrent writers over real HTTP: version numbers stay consecutive, nothing is lost."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi import FastAPI

from medvault.runtime import Runtime
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.inspect import stored_state
from tests.support.live_server import LiveServer

WRITERS = 8


def test_concurrent_new_versions_get_consecutive_numbers(
    app: FastAPI, runtime: Runtime, api_token: str
) -> None:
    headers = {"Authorization": f"Bearer {api_token}"}
    with (
        LiveServer(app) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
    ):
        patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]
        doc = http.post(
            "/api/v1/documents",
            params={"patient_id": patient, "document_type": "11502-2"},
            content=pdf_bytes(),
            headers={"content-type": "application/pdf"},
        ).json()
        payloads = [pdf_bytes(300_000) for _ in range(WRITERS)]

        def add_version(content: bytes) -> httpx.Response:
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as own:
                return own.post(
                    f"/api/v1/documents/{doc['id']}/versions",
                    content=content,
                    headers={"content-type": "application/pdf"},
                )

        with ThreadPoolExecutor(WRITERS) as pool:
            responses = list(pool.map(add_version, payloads))
        assert [r.status_code for r in responses] == [201] * WRITERS
        versions = http.get(f"/api/v1/documents/{doc['id']}/versions").json()["items"]
        assert sorted(v["version"] for v in versions) == list(range(1, WRITERS + 2))
        by_number = {v["version"]: v["sha256"] for v in versions}
        for response, content in zip(responses, payloads, strict=True):
            number = response.json()["version"]
            assert by_number[number] == hashlib.sha256(content).hexdigest()
            fetched = http.get(f"/api/v1/documents/{doc['id']}/versions/{number}/content")
            assert fetched.content == content
    state = stored_state(runtime)
    assert state.versions == state.blobs == WRITERS + 1


def test_simultaneous_identical_uploads_store_one_document(
    app: FastAPI, runtime: Runtime, api_token: str
) -> None:
    headers = {"Authorization": f"Bearer {api_token}"}
    content = pdf_bytes(200_000)
    with (
        LiveServer(app) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=60) as http,
    ):
        patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]

        def upload(_: int) -> httpx.Response:
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as own:
                return own.post(
                    "/api/v1/documents",
                    params={"patient_id": patient, "document_type": "11502-2"},
                    content=content,
                    headers={"content-type": "application/pdf"},
                )

        with ThreadPoolExecutor(WRITERS) as pool:
            responses = list(pool.map(upload, range(WRITERS)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [409] * (WRITERS - 1)
    winner = next(r for r in responses if r.status_code == 201).json()["id"]
    assert all(
        r.json()["existing_document_id"] == winner for r in responses if r.status_code == 409
    )
    state = stored_state(runtime)
    assert state.documents == state.blobs == 1
