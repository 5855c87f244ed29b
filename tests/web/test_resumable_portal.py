"""The portal's tus routes (/upload/resumable) over HTTP: the protocol as the API speaks
it, with the portal's session, CSRF token, record rules and problems in the visitor's
language. Chromium drives them in test_resumable_upload.py; the roles are in
test_portal_matrix.py."""

from __future__ import annotations

import base64
import hashlib
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.documents.models import Document, DocumentVersion
from medvault.kit import i18n
from medvault.kit.i18n import gettext, msg, translate
from medvault.ops.request_limits import is_upload_route
from medvault.uploads.models import Upload
from medvault.uploads.staging import UPLOAD_BLOB_PREFIX
from medvault.web.language import LANGUAGE_COOKIE
from tests.support.factories import pdf_bytes
from tests.support.portal import csrf_token
from tests.web.portal_world import Practice

TUS = {"Tus-Resumable": "1.0.0", "Accept": "application/json"}
PATCH_TYPE = "application/offset+octet-stream"


def _metadata(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def _create(browser: TestClient, token: str, length: int, **fields: str) -> httpx.Response:
    response: httpx.Response = browser.post(
        "/upload/resumable",
        headers={
            **TUS,
            "X-CSRF-Token": token,
            "Upload-Length": str(length),
            "Upload-Metadata": _metadata(document_type="11502-2", filename="scan.pdf", **fields),
        },
    )
    return response


def _patch(browser: TestClient, token: str, url: str, offset: int, data: bytes) -> httpx.Response:
    response: httpx.Response = browser.patch(
        url,
        content=data,
        headers={
            **TUS,
            "X-CSRF-Token": token,
            "Upload-Offset": str(offset),
            "Content-Type": PATCH_TYPE,
        },
    )
    return response


@pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)
def test_a_file_in_pieces_becomes_a_document(practice: Practice) -> None:
    data = pdf_bytes(300_000)
    with practice.browser("clinician") as browser:
        token = csrf_token(browser)
        created = _create(browser, token, len(data), patient_id=practice.own, title="In pieces")
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        assert url.startswith("/upload/resumable/")
        offset = 0
        for size in (70_000, 1, 100_000, 129_999):
            answer = _patch(browser, token, url, offset, data[offset : offset + size])
            assert answer.status_code == 204, answer.text
            offset += size
            assert answer.headers["Upload-Offset"] == str(offset)
        document_id = answer.headers["Medvault-Document-Id"]
        # The portal's own page for the document, not the API's.
        assert answer.headers["Link"] == f'</documents/{document_id}>; rel="related"'
        status = browser.head(url, headers=TUS)
        assert status.headers["Medvault-Document-Id"] == document_id
        assert browser.get(f"/documents/{document_id}").status_code == 200
    with practice.runtime.clinical.read_session() as session:
        stored = session.scalar(
            select(DocumentVersion.sha256).where(
                DocumentVersion.document_id == uuid.UUID(document_id)
            )
        )
    assert stored == hashlib.sha256(data).hexdigest()
    assert list(practice.runtime.blobs.list_blobs(UPLOAD_BLOB_PREFIX)) == []


def test_a_patients_upload_goes_to_their_own_record(practice: Practice) -> None:
    data = pdf_bytes(50_000)
    with practice.browser("patient") as browser:
        token = csrf_token(browser)
        # The page names no patient, as with /upload/files: the server does.
        created = _create(browser, token, len(data), title="My scan")
        assert created.status_code == 201, created.text
        done = _patch(browser, token, created.headers["Location"], 0, data)
        assert done.status_code == 204, done.text
    with practice.runtime.clinical.read_session() as session:
        document = session.get(Document, uuid.UUID(done.headers["Medvault-Document-Id"]))
        assert document is not None
        assert str(document.patient_id) == practice.own
        upload = session.scalar(select(Upload))
        assert upload is not None and str(upload.patient_id) == practice.own


def test_cancelling_deletes_what_was_received(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        token = csrf_token(browser)
        created = _create(browser, token, 100_000, patient_id=practice.own)
        url = created.headers["Location"]
        assert _patch(browser, token, url, 0, pdf_bytes(40_000)).status_code == 204
        assert list(practice.runtime.blobs.list_blobs(UPLOAD_BLOB_PREFIX)) != []
        ended = browser.delete(url, headers={**TUS, "X-CSRF-Token": token})
        assert ended.status_code == 204
        assert browser.head(url, headers=TUS).status_code == 404
    with practice.runtime.clinical.read_session() as session:
        assert session.scalar(select(Upload)) is None
    assert list(practice.runtime.blobs.list_blobs(UPLOAD_BLOB_PREFIX)) == []


def test_refusals_are_the_portals_problems_in_the_visitors_language(practice: Practice) -> None:
    def cy(text: str, **values: object) -> str:
        with i18n.language("cy"):
            return gettext(text, **values)

    with practice.browser("clinician") as browser:
        browser.cookies.set(LANGUAGE_COOKIE, "cy")
        token = csrf_token(browser)
        old = browser.post(
            "/upload/resumable",
            headers={"Accept": "application/json", "X-CSRF-Token": token, "Upload-Length": "9"},
        )
        bad = browser.post(
            "/upload/resumable",
            headers={**TUS, "X-CSRF-Token": token, "Upload-Length": "nine"},
        )
    assert old.status_code == 412
    assert old.headers["content-type"] == "application/problem+json"
    # The API's problem type and tus headers, in the page's words.
    assert old.headers["Tus-Resumable"] == "1.0.0"
    assert old.headers["Tus-Version"] == "1.0.0"
    body = old.json()
    assert body["type"] == "urn:medvault:problem:tus-version-unsupported"
    title = "This tus version is not supported"
    assert body["title"] == cy(title) != title
    assert body["detail"] == cy("Send Tus-Resumable: 1.0.0 with every request.")
    assert bad.status_code == 400
    english = msg("{name} must be a non-negative integer.", name="Upload-Length")
    with i18n.language("cy"):
        welsh = translate(english)
    assert bad.json()["detail"] == welsh != english


def test_upload_bodies_pass_the_request_limit(practice: Practice) -> None:
    assert is_upload_route("POST", "/upload/resumable")
    assert is_upload_route("PATCH", f"/upload/resumable/{uuid.uuid4()}")
    assert not is_upload_route("DELETE", f"/upload/resumable/{uuid.uuid4()}")
    # A PATCH larger than the limit on JSON and form bodies (1 MiB) is an upload's.
    limit = practice.runtime.settings.max_json_body_bytes
    data = pdf_bytes(limit + 100_000)
    with practice.browser("clinician") as browser:
        token = csrf_token(browser)
        created = _create(browser, token, len(data), patient_id=practice.own)
        done = _patch(browser, token, created.headers["Location"], 0, data)
    assert done.status_code == 204, done.text
    assert "Medvault-Document-Id" in done.headers
