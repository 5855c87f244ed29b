"""``MEDVAULT_FHIR_ATTACHMENT_SHA1``: whether a job computes SHA-1 after each upload.

Off: no job, so no ``hash`` is ever claimed. On: none until the job ran, then the right one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.documents.models import DocumentVersion
from medvault.jobs import build_worker
from medvault.runtime import Runtime
from tests.support.backends import SettingsFactory
from tests.support.factories import create_patient, pdf_bytes, upload_raw


@pytest.mark.parametrize("sha1_job", [True, False])
def test_the_setting_decides_whether_attachment_hash_is_offered(
    runtime: Runtime, make_settings: SettingsFactory, sha1_job: bool
) -> None:
    settings = make_settings(fhir_attachment_sha1=sha1_job)
    configured = dataclasses.replace(runtime, settings=settings)
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="sha1-setting").token
        session.commit()
    with TestClient(create_app(runtime=configured)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        patient = create_patient(client)
        content = pdf_bytes()
        document = upload_raw(client, patient, content).json()["id"]
        before = client.get(f"/fhir/DocumentReference/{document}").json()
        worker = build_worker(configured)
        while worker.run_one():
            pass
        after = client.get(f"/fhir/DocumentReference/{document}").json()
    # Off the upload path: the upload's answer never waits for the hash.
    assert "hash" not in before["content"][0]["attachment"]
    attachment = after["content"][0]["attachment"]
    expected = base64.b64encode(hashlib.sha1(content, usedforsecurity=False).digest()).decode()
    assert attachment.get("hash") == (expected if sha1_job else None)
    with runtime.clinical.read_session() as session:
        stored = session.query(DocumentVersion).one()
        assert (stored.sha1 is not None) is sha1_job
