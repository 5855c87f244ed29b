"""Binary read: raw bytes (ranges, ETags) or base64 JSON under a size cap, both audited."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.config import Settings
from medvault.runtime import Runtime, build_runtime
from tests.fhir.support import fhir_client
from tests.support.backends import Backend
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events


def binary_url(fhir: TestClient, document_id: str) -> str:
    resource = fhir.get(f"/fhir/DocumentReference/{document_id}").json()
    return str(resource["content"][0]["attachment"]["url"])


def test_raw_bytes_with_ranges_and_etags(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes(300_000)
    doc = upload_raw(fhir, patient, content).json()
    url = binary_url(fhir, doc["id"])

    full = fhir.get(url)
    assert full.status_code == 200
    assert full.content == content
    assert full.headers["content-type"] == "application/pdf"
    assert full.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert full.headers["accept-ranges"] == "bytes"

    part = fhir.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(content)}"
    unchanged = fhir.get(url, headers={"If-None-Match": full.headers["etag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""
    # The same audit event as a REST content read, once per response.
    events = audit_events(runtime, "document.content.read")
    assert [e.details["status"] for e in events] == [200, 206, 304]
    assert {e.resource_id for e in events} == {doc["id"]}


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"accept": "application/fhir+json"}, {}),
        ({"accept": "application/json"}, {}),
        ({}, {"_format": "json"}),
        ({"accept": "application/pdf;q=0.5, application/fhir+json"}, {}),
    ],
)
def test_the_resource_form_on_request(
    fhir: TestClient, runtime: Runtime, headers: dict[str, str], params: dict[str, str]
) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes(70_001)  # not a multiple of 3: the base64 padding must be right
    doc = upload_raw(fhir, patient, content).json()
    url = binary_url(fhir, doc["id"])

    response = fhir.get(url, headers=headers, params=params)

    assert response.status_code == 200, response.text
    assert response.headers["content-length"] == str(len(response.content))
    binary = response.json()
    assert binary["resourceType"] == "Binary"
    assert binary["id"] == url.rsplit("/", 1)[1]
    assert binary["contentType"] == "application/pdf"
    assert binary["securityContext"] == {"reference": f"DocumentReference/{doc['id']}"}
    assert base64.b64decode(binary["data"]) == content
    event = audit_events(runtime, "document.content.read")[-1]
    assert event.details["format"] == "fhir+json"


@pytest.mark.parametrize(
    "accept", ["*/*", "application/pdf", "text/html,application/xhtml+xml,*/*;q=0.8", ""]
)
def test_everything_else_gets_the_raw_bytes(fhir: TestClient, accept: str) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes()
    doc = upload_raw(fhir, patient, content).json()
    assert fhir.get(binary_url(fhir, doc["id"]), headers={"accept": accept}).content == content


@pytest.fixture
def small_json_limit(backend: Backend, api_token: str) -> Iterator[tuple[FastAPI, Runtime]]:
    settings = Settings(
        **{**backend.settings.model_dump(exclude_unset=True), "fhir_binary_json_max_bytes": 1000}
    )
    runtime = build_runtime(settings, run_migrations=True)
    try:
        yield create_app(runtime=runtime), runtime
    finally:
        runtime.close()


def test_the_base64_form_is_refused_above_the_limit(
    small_json_limit: tuple[FastAPI, Runtime], api_token: str
) -> None:
    app, runtime = small_json_limit
    with fhir_client(app, api_token) as fhir:
        patient = create_patient(fhir)
        small, large = pdf_bytes(900), pdf_bytes(5000)
        small_url = binary_url(fhir, upload_raw(fhir, patient, small).json()["id"])
        large_url = binary_url(fhir, upload_raw(fhir, patient, large).json()["id"])
        reads = len(audit_events(runtime, "document.content.read"))

        assert base64.b64decode(fhir.get(small_url, params={"_format": "json"}).json()["data"]) == (
            small
        )
        refused = fhir.get(large_url, headers={"accept": "application/fhir+json"})

        assert refused.status_code == 406
        issue = refused.json()["issue"][0]
        assert issue["code"] == "too-costly"
        assert issue["details"]["coding"][0]["code"] == "fhir-binary-too-large"
        assert large_url in issue["diagnostics"] and "5000 bytes" in issue["diagnostics"]
        assert refused.headers["link"] == f'<{large_url}>; rel="alternate"; type="application/pdf"'
        # Nothing was read, so nothing but the small read is audited; raw still works.
        assert len(audit_events(runtime, "document.content.read")) == reads + 1
        assert fhir.get(large_url).content == large


def test_vread_and_unknown_binaries(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    content = pdf_bytes()
    url = binary_url(fhir, upload_raw(fhir, patient, content).json()["id"])
    assert fhir.get(f"{url}/_history/1").content == content
    assert fhir.get(f"{url}/_history/2").status_code == 404
    for raw in ("nope", "00000000-0000-0000-0000-000000000000", url.rsplit("/", 1)[1].upper()):
        missing = fhir.get(f"/fhir/Binary/{raw}")
        assert missing.status_code == 404, raw
        assert missing.json()["issue"][0]["code"] == "not-found"


def test_an_old_version_stays_readable(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    first = pdf_bytes()
    doc = upload_raw(fhir, patient, first).json()
    old_url = binary_url(fhir, doc["id"])
    fhir.post(
        f"/api/v1/documents/{doc['id']}/versions",
        content=pdf_bytes(),
        headers={"content-type": "application/pdf"},
    )
    assert binary_url(fhir, doc["id"]) != old_url
    assert fhir.get(old_url).content == first
