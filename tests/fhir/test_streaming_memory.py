"""Base64 in FHIR JSON streams both ways: memory stays far below the document's size.

A real uvicorn server in this process receives a DocumentReference whose 64 MiB
document arrives as 85 MiB of base64 inside JSON, sent by a generator, then serves it
back as a Binary resource. tracemalloc counts every Python allocation in the process
(client and server): the peak must stay a fraction of the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.runtime import build_runtime
from tests.fhir.support import validate_resource
from tests.support.factories import patient_payload
from tests.support.live_server import LiveServer

MiB = 1024 * 1024
FILE_SIZE = 64 * MiB
PEAK_LIMIT = 24 * MiB
BLOCK = 3 * 256 * 1024  # a multiple of 3, so each block's base64 stands alone


def json_body(patient: str, digest: hashlib._Hash) -> Iterator[bytes]:
    head, tail = json.dumps(
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "application/pdf", "data": "@"}}],
        }
    ).split('"@"')
    yield head.encode() + b'"'
    block = os.urandom(BLOCK)
    sent = 0
    while sent < FILE_SIZE:
        chunk = block[: FILE_SIZE - sent]
        if sent == 0:
            chunk = b"%PDF-1.7\n" + chunk[9:]
        digest.update(chunk)
        sent += len(chunk)
        yield base64.b64encode(chunk)
    yield b'"' + tail.encode()


@pytest.mark.slow
def test_base64_json_streams_in_and_out(tmp_path: Path) -> None:
    runtime = build_runtime(
        Settings(
            env="test",
            data_dir=tmp_path,
            max_upload_bytes=FILE_SIZE,
            fhir_binary_json_max_bytes=FILE_SIZE,
        ),
        run_migrations=True,
    )
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="memory").token
        session.commit()
    sent = hashlib.sha256()
    with (
        LiveServer(create_app(runtime=runtime)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        ) as http,
    ):
        patient = http.post("/api/v1/patients", json=patient_payload()).json()["id"]
        tracemalloc.start()
        try:
            created = http.post(
                "/fhir/DocumentReference",
                content=json_body(patient, sent),
                headers={"content-type": "application/fhir+json"},
            )
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert created.status_code == 201, created.text
            url = created.json()["content"][0]["attachment"]["url"]
            streamed = 0
            with http.stream("GET", url, headers={"accept": "application/fhir+json"}) as resp:
                assert resp.status_code == 200
                for chunk in resp.iter_bytes():
                    streamed += len(chunk)  # read and dropped: the client holds nothing
            _, json_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # Outside the measurement: the whole Binary resource, validated and compared.
        whole = http.get(url, headers={"accept": "application/fhir+json"})
        resource = whole.json()
        validate_resource(resource, status=whole.status_code)
        received = hashlib.sha256(base64.b64decode(resource["data"]))
        validate_resource(created.json(), status=created.status_code)
    runtime.close()
    assert created.json()["content"][0]["attachment"]["size"] == FILE_SIZE
    assert received.hexdigest() == sent.hexdigest()
    assert streamed == len(whole.content)
    assert upload_peak < PEAK_LIMIT, f"upload peak {upload_peak / MiB:.1f} MiB"
    assert json_peak < PEAK_LIMIT, f"download peak {json_peak / MiB:.1f} MiB"
