"""Active content in uploaded PDFs on both backends: recorded on the version, or refused.

``tests/documents/test_active_content.py`` covers the detector itself; this covers
what an upload does with its verdict (``documents.arrival.inspect``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pikepdf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from medvault.app import create_app
from medvault.processing.models import Job
from medvault.runtime import Runtime, build_runtime
from tests.processing.jobs_support import first_version
from tests.support.backends import SettingsFactory
from tests.support.factories import (
    create_patient,
    pdf_bytes,
    png_bytes,
    upload_multipart,
    upload_raw,
)
from tests.support.inspect import StoredState, stored_state

ACTIVE_CONTENT_PROBLEM = "urn:medvault:problem:active-content"


def pdf(*, javascript: bool) -> bytes:
    document = pikepdf.new()
    document.add_blank_page()
    if javascript:
        document.Root.OpenAction = pikepdf.Dictionary(
            S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)")
        )
    out = io.BytesIO()
    document.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    return out.getvalue()


def test_active_content_is_recorded_on_the_version(runtime: Runtime, client: TestClient) -> None:
    patient = create_patient(client)
    uploads = {
        "javascript": upload_raw(client, patient, pdf(javascript=True)),
        "plain": upload_multipart(client, patient, pdf(javascript=False)),
        "unparseable": upload_raw(client, patient, pdf_bytes(3000)),
        "image": upload_raw(
            client, patient, png_bytes(), filename="x.png", content_type="image/png"
        ),
    }
    for name, response in uploads.items():
        assert response.status_code == 201, (name, response.text)
    recorded = {
        name: first_version(runtime, r.json()["id"]).active_content for name, r in uploads.items()
    }
    assert recorded == {
        "javascript": "auto-action,javascript",
        "plain": "",
        "unparseable": "unreadable",
        "image": None,  # only PDFs are inspected
    }


@pytest.fixture
def refusing(
    make_settings: SettingsFactory, runtime: Runtime, api_token: str
) -> Iterator[TestClient]:
    """The test's vault (``runtime`` migrated and emptied it) with MEDVAULT_REFUSE_ACTIVE_PDF."""
    app = create_app(runtime=build_runtime(make_settings(refuse_active_pdf=True)))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {api_token}"
        yield client


def test_with_refusal_on_an_active_pdf_is_refused_and_nothing_is_stored(
    runtime: Runtime, refusing: TestClient
) -> None:
    patient = create_patient(refusing)
    active = pdf(javascript=True)
    attempts = {
        "raw": upload_raw(refusing, patient, active),
        "multipart": upload_multipart(refusing, patient, active),
        "fhir-binary": refusing.post(
            "/fhir/Binary",
            content=active,
            headers={"content-type": "application/pdf", "X-Security-Context": f"Patient/{patient}"},
        ),
    }
    for name, response in attempts.items():
        assert response.status_code == 422, (name, response.text)
    problem = attempts["raw"].json()
    assert problem["type"] == ACTIVE_CONTENT_PROBLEM
    assert problem["active_content"] == ["auto-action", "javascript"]
    # No document row, no version, no blob, no half-written upload, and no job.
    assert stored_state(runtime) == StoredState(documents=0, versions=0, blobs=0, partial_uploads=0)
    with runtime.clinical.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0

    plain = upload_raw(refusing, patient, pdf(javascript=False))
    assert plain.status_code == 201, plain.text
    assert first_version(runtime, plain.json()["id"]).active_content == ""
    assert stored_state(runtime).blobs == 1


def test_with_refusal_on_a_pdf_that_cannot_be_parsed_is_refused_too(
    runtime: Runtime, refusing: TestClient
) -> None:
    # Nothing can be said about what it would do in a reader: it fails closed.
    response = upload_raw(refusing, create_patient(refusing), pdf_bytes(3000))
    assert response.status_code == 422, response.text
    assert response.json()["active_content"] == ["unreadable"]
    assert stored_state(runtime).documents == 0
