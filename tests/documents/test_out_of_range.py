"""Issue 9, defect 8: numbers past any sane range are 4xx, never a 500.

Python refuses int() on more than ~4,300 digits, PostgreSQL's integer columns end at
2**31 - 1, and ``title`` is String(500); each once became an unhandled error.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_multipart, upload_raw

HUGE = "9" * 5000


@pytest.fixture
def stored(client: TestClient) -> tuple[str, bytes]:
    content = pdf_bytes(50_000)
    response = upload_raw(client, create_patient(client), content)
    assert response.status_code == 201, response.text
    return response.json()["id"], content


def _content_urls(client: TestClient, doc_id: str) -> list[str]:
    signed = client.post(f"/api/v1/documents/{doc_id}/download-url")
    assert signed.status_code == 201, signed.text
    version_id = client.get(f"/fhir/DocumentReference/{doc_id}").json()["content"][0]["attachment"][
        "url"
    ]
    return [
        f"/api/v1/documents/{doc_id}/content",
        f"/api/v1/documents/{doc_id}/versions/1/content",
        signed.json()["url"].removeprefix("http://testserver"),
        "/fhir/" + version_id.split("/fhir/")[-1],
    ]


def test_ranges_with_thousands_of_digits_keep_their_meaning(
    client: TestClient, stored: tuple[str, bytes]
) -> None:
    doc_id, content = stored
    for url in _content_urls(client, doc_id):
        # A start past the end of the file: not satisfiable.
        past = client.get(url, headers={"Range": f"bytes={HUGE}-", "accept": "*/*"})
        assert past.status_code == 416, (url, past.text)
        assert past.headers["content-range"] == f"bytes */{len(content)}"
        # An end past the end: cut to the file.
        tail = client.get(url, headers={"Range": f"bytes=10-{HUGE}", "accept": "*/*"})
        assert tail.status_code == 206, (url, tail.text)
        assert tail.content == content[10:]
        # A suffix longer than the file: the whole file.
        suffix = client.get(url, headers={"Range": f"bytes=-{HUGE}", "accept": "*/*"})
        assert suffix.status_code == 206 and suffix.content == content
        # Leading zeros do not make a small number big.
        zeros = client.get(url, headers={"Range": f"bytes={'0' * 5000}5-9", "accept": "*/*"})
        assert zeros.status_code == 206 and zeros.content == content[5:10]


@pytest.mark.parametrize("version", [2**63, 2**31, -1, 0])
def test_download_url_version_out_of_range_is_422(
    client: TestClient, stored: tuple[str, bytes], version: int
) -> None:
    doc_id, _ = stored
    response = client.post(f"/api/v1/documents/{doc_id}/download-url", json={"version": version})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("number", [str(10**30), str(2**31), "²", "0", HUGE])
def test_version_numbers_no_version_can_have_are_404(
    client: TestClient, stored: tuple[str, bytes], number: str
) -> None:
    doc_id, _ = stored
    response = client.get(f"/api/v1/documents/{doc_id}/versions/{number}/content")
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("face", ["multipart", "raw"])
def test_a_title_derived_from_a_long_file_name_is_cut_to_fit(
    client: TestClient, runtime: Runtime, face: str
) -> None:
    patient = create_patient(client)
    name = "Ä" * 700 + ".pdf"
    upload = upload_multipart if face == "multipart" else upload_raw
    response = upload(client, patient, pdf_bytes(), filename=name)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["title"] == "Ä" * 500
    assert body["filename"].endswith(".pdf") and len(body["filename"].encode()) <= 255
    assert body["original_filename"] == name


def test_an_explicit_title_too_long_or_a_file_name_past_the_limit_is_422(
    client: TestClient,
) -> None:
    patient = create_patient(client)
    assert upload_raw(client, patient, pdf_bytes(), title="T" * 501).status_code == 422
    assert upload_raw(client, patient, pdf_bytes(), filename="n" * 1025).status_code == 422
    too_long = upload_multipart(client, patient, pdf_bytes(), filename="n" * 1025 + ".pdf")
    assert too_long.status_code == 422, too_long.text


def test_fhir_count_with_thousands_of_digits_is_capped(client: TestClient) -> None:
    assert client.get("/fhir/Patient", params={"_count": HUGE}).status_code == 200
    assert client.get("/fhir/Patient", params={"_count": "²"}).status_code == 400
