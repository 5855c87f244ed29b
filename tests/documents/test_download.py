"""Streaming downloads: ranges across segments, conditional requests, headers."""

from __future__ import annotations

import base64
import hashlib

import pytest
from fastapi.testclient import TestClient

from medvault.crypto.keyring import Keyring
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_multipart, upload_raw
from tests.support.inspect import audit_events

SEGMENT = 64 * 1024


@pytest.fixture
def stored(client: TestClient) -> tuple[str, bytes]:
    content = pdf_bytes(5 * SEGMENT + 1234)
    doc = upload_raw(client, create_patient(client), content, filename="Résumé clinique.pdf").json()
    return doc["id"], content


def test_full_download_headers(client: TestClient, stored: tuple[str, bytes]) -> None:
    doc_id, content = stored
    response = client.get(f"/api/v1/documents/{doc_id}/content")
    assert response.status_code == 200
    assert response.content == content
    sha = hashlib.sha256(content).hexdigest()
    assert response.headers["etag"] == f'"{sha}"'
    assert response.headers["content-length"] == str(len(content))
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["repr-digest"] == (
        "sha-256=:" + base64.b64encode(bytes.fromhex(sha)).decode() + ":"
    )
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Resume clinique.pdf"')
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20clinique.pdf" in disposition


def test_inline_disposition_for_previews(client: TestClient, stored: tuple[str, bytes]) -> None:
    doc_id, _ = stored
    response = client.get(f"/api/v1/documents/{doc_id}/content", params={"disposition": "inline"})
    assert response.headers["content-disposition"].startswith("inline;")


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        (f"bytes={SEGMENT - 5}-{SEGMENT + 5}", SEGMENT - 5, SEGMENT + 5),
        (f"bytes={SEGMENT}-{3 * SEGMENT + 17}", SEGMENT, 3 * SEGMENT + 17),
        (f"bytes={2 * SEGMENT - 1}-", 2 * SEGMENT - 1, None),
        ("bytes=-700", -700, None),
        ("bytes=100-99999999", 100, None),
    ],
)
def test_ranges_across_segments(
    client: TestClient, stored: tuple[str, bytes], header: str, first: int, last: int | None
) -> None:
    doc_id, content = stored
    response = client.get(f"/api/v1/documents/{doc_id}/content", headers={"Range": header})
    assert response.status_code == 206
    start = first if first >= 0 else len(content) + first
    end = len(content) - 1 if last is None else last
    assert response.content == content[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(content)}"
    assert response.headers["content-length"] == str(end - start + 1)


def test_unsatisfiable_range_is_416(client: TestClient, stored: tuple[str, bytes]) -> None:
    doc_id, content = stored
    response = client.get(
        f"/api/v1/documents/{doc_id}/content", headers={"Range": f"bytes={len(content)}-"}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(content)}"
    assert response.json()["type"] == "urn:medvault:problem:range-not-satisfiable"


@pytest.mark.parametrize("header", ["bytes=5-1", "items=0-5", "bytes=0-5,10-20", "bytes=x-y"])
def test_unusable_range_headers_serve_the_whole_file(
    client: TestClient, stored: tuple[str, bytes], header: str
) -> None:
    doc_id, content = stored
    response = client.get(f"/api/v1/documents/{doc_id}/content", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == content


def test_if_none_match_gives_304(client: TestClient, stored: tuple[str, bytes]) -> None:
    doc_id, content = stored
    etag = client.get(f"/api/v1/documents/{doc_id}").json()["sha256"]
    response = client.get(
        f"/api/v1/documents/{doc_id}/content", headers={"If-None-Match": f'"{etag}"'}
    )
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == f'"{etag}"'
    other = client.get(f"/api/v1/documents/{doc_id}/content", headers={"If-None-Match": '"abc"'})
    assert other.status_code == 200 and other.content == content


def test_if_range_with_a_stale_etag_serves_everything(
    client: TestClient, stored: tuple[str, bytes]
) -> None:
    doc_id, content = stored
    sha = hashlib.sha256(content).hexdigest()
    fresh = client.get(
        f"/api/v1/documents/{doc_id}/content",
        headers={"Range": "bytes=0-9", "If-Range": f'"{sha}"'},
    )
    assert fresh.status_code == 206 and fresh.content == content[:10]
    stale = client.get(
        f"/api/v1/documents/{doc_id}/content", headers={"Range": "bytes=0-9", "If-Range": '"old"'}
    )
    assert stale.status_code == 200 and stale.content == content


def test_every_content_read_is_audited_before_bytes(
    client: TestClient, runtime: Runtime, stored: tuple[str, bytes]
) -> None:
    doc_id, _ = stored
    client.get(f"/api/v1/documents/{doc_id}/content", headers={"Range": "bytes=0-9"})
    events = audit_events(runtime, "document.content.read")
    assert len(events) == 1
    assert events[0].resource_id == doc_id
    assert events[0].details["range"].startswith("bytes 0-9/")
    assert events[0].request_id


def test_a_single_segment_file_round_trips(client: TestClient) -> None:
    content = pdf_bytes(100)
    doc = upload_multipart(client, create_patient(client), content).json()
    assert client.get(f"/api/v1/documents/{doc['id']}/content").content == content
    tail = client.get(f"/api/v1/documents/{doc['id']}/content", headers={"Range": "bytes=-1"})
    assert tail.content == content[-1:]


def test_a_missing_kek_is_503_and_does_not_mark_the_version_corrupt(
    client: TestClient, runtime: Runtime, stored: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc_id, content = stored
    complete = runtime.keyring
    runtime.keyring = Keyring.generate()  # as if this instance never got the old key
    monkeypatch.setattr(runtime, "reload_keyring", lambda: runtime.keyring)
    response = client.get(f"/api/v1/documents/{doc_id}/content")
    assert response.status_code == 503
    assert response.json()["type"] == "urn:medvault:problem:key-unavailable"
    runtime.keyring = complete
    versions = client.get(f"/api/v1/documents/{doc_id}/versions").json()["items"]
    assert versions[0]["state"] == "available"
    assert client.get(f"/api/v1/documents/{doc_id}/content").content == content


def test_missing_blob_is_reported_at_once_and_marked_corrupt(
    client: TestClient, runtime: Runtime, stored: tuple[str, bytes]
) -> None:
    """Regression: on SQLite, marking corrupt used to deadlock on the request's own lock."""
    doc_id, _ = stored
    for info in list(runtime.blobs.list_blobs()):
        runtime.blobs.delete(info.key)
    response = client.get(f"/api/v1/documents/{doc_id}/content")
    assert response.status_code == 500
    assert response.json()["type"] == "urn:medvault:problem:integrity-failure"
    versions = client.get(f"/api/v1/documents/{doc_id}/versions").json()["items"]
    assert versions[0]["state"] == "corrupt"
