from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.support.factories import create_patient, pdf_bytes
from tests.uploads.support import create, head, send_in_pieces


def test_smoke(client: TestClient) -> None:
    patient = create_patient(client)
    data = pdf_bytes(300_000)
    created = create(client, patient, len(data))
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    assert head(client, url).headers["Upload-Offset"] == "0"
    done = send_in_pieces(client, url, data, [1000, 70_000, 5])
    document = done.headers["Medvault-Document-Id"]
    got = client.get(f"/api/v1/documents/{document}/content")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
