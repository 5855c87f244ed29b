"""Every allowed type is recognised by its magic bytes; the allow-list is configurable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.runtime import build_runtime
from tests.support.backends import Backend
from tests.support.factories import (
    create_patient,
    dicom_bytes,
    jpeg_bytes,
    pdf_bytes,
    png_bytes,
    tiff_bytes,
    upload_raw,
)


@pytest.mark.parametrize(
    ("make", "expected", "extension"),
    [
        (pdf_bytes, "application/pdf", ".pdf"),
        (jpeg_bytes, "image/jpeg", ".jpg"),
        (png_bytes, "image/png", ".png"),
        (tiff_bytes, "image/tiff", ".tif"),
        (dicom_bytes, "application/dicom", ".dcm"),
    ],
)
def test_each_default_type_is_sniffed(
    client: TestClient, make: Callable[[], bytes], expected: str, extension: str
) -> None:
    content = make()
    response = client.post(
        "/api/v1/documents",
        params={"patient_id": create_patient(client), "document_type": "11502-2"},
        content=content,
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == expected
    assert body["filename"] == "document" + extension
    download = client.get(f"/api/v1/documents/{body['id']}/content")
    assert download.headers["content-type"] == expected
    assert download.content == content


def test_allowed_types_can_be_narrowed(backend: Backend, api_token: str) -> None:
    runtime = build_runtime(
        backend.settings.model_copy(update={"allowed_types": ("application/pdf",)}),
        run_migrations=True,
    )
    with TestClient(create_app(runtime=runtime)) as narrow:
        narrow.headers["Authorization"] = f"Bearer {api_token}"
        patient = create_patient(narrow)
        refused = upload_raw(narrow, patient, png_bytes())
        assert refused.status_code == 415
        assert refused.json()["allowed_types"] == ["application/pdf"]
        assert upload_raw(narrow, patient, pdf_bytes()).status_code == 201
    runtime.close()


def test_operators_may_allow_extra_types(backend: Backend, api_token: str) -> None:
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(300)
    settings = backend.settings.model_copy(
        update={"allowed_types": ("application/pdf", "image/gif")}
    )
    runtime = build_runtime(settings, run_migrations=True)
    with TestClient(create_app(runtime=runtime)) as wide:
        wide.headers["Authorization"] = f"Bearer {api_token}"
        response = upload_raw(wide, create_patient(wide), gif, filename="")
        assert response.status_code == 201, response.text
        assert response.json()["content_type"] == "image/gif"
        assert response.json()["filename"] == "document.gif"
    runtime.close()
