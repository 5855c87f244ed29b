"""``MEDVAULT_FHIR_ATTACHMENT_SHA1=false``: no SHA-1 at ingest, so no ``hash`` is claimed."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.auth.service import create_api_token
from medvault.documents.models import DocumentVersion
from medvault.runtime import Runtime
from tests.support.backends import SettingsFactory
from tests.support.factories import create_patient, pdf_bytes, upload_raw


@pytest.mark.parametrize("sha1_at_ingest", [True, False])
def test_the_setting_decides_whether_attachment_hash_is_offered(
    runtime: Runtime, make_settings: SettingsFactory, sha1_at_ingest: bool
) -> None:
    settings = make_settings(fhir_attachment_sha1=sha1_at_ingest)
    configured = dataclasses.replace(runtime, settings=settings)
    with runtime.auth.session() as session:
        token = create_api_token(session=session, name="sha1-setting").token
        session.commit()
    with TestClient(create_app(runtime=configured)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        patient = create_patient(client)
        document = upload_raw(client, patient, pdf_bytes()).json()["id"]
        resource = client.get(f"/fhir/DocumentReference/{document}").json()
    attachment = resource["content"][0]["attachment"]
    assert ("hash" in attachment) is sha1_at_ingest
    with runtime.clinical.read_session() as session:
        stored = session.query(DocumentVersion).one()
        assert (stored.sha1 is not None) is sha1_at_ingest
