"""Bulk export after the kick-off: who may see it, how it is stored, audited and removed.

Every test runs on SQLite + filesystem and on PostgreSQL + S3 (the ``backend`` fixture);
storage is inspected through the real blob store, never a mock.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.fhir.bulk.expiry import expire_exports
from medvault.fhir.bulk.ndjson import BLOB_PREFIX
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from tests.fhir.bulk_support import PREFER, download, events, kick_off, manifest_of, run_exports
from tests.fhir.support import People
from tests.support.factories import create_patient, pdf_bytes, upload_raw

FAMILY = "Zyxwvutsrqson"


def _stored(runtime: Runtime) -> dict[str, bytes]:
    """Every export object in the blob store, as the store holds it."""
    return {
        blob.key: b"".join(runtime.blobs.read(blob.key))
        for blob in runtime.blobs.list_blobs(BLOB_PREFIX)
    }


def test_outputs_are_encrypted_in_the_store_and_plain_only_when_downloaded(
    fhir: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(fhir, family_name=FAMILY)
    upload_raw(fhir, patient, pdf_bytes(2048))
    manifest = manifest_of(fhir, runtime, kick_off(fhir))
    stored = _stored(runtime)
    assert len(stored) == len(manifest["output"]) == 2
    for key, data in stored.items():
        assert data.startswith(b"MVB\x01"), key  # the vault's envelope
        assert FAMILY.encode() not in data and patient.encode() not in data, key
        assert b'"resourceType"' not in data, key
    found = download(fhir, manifest)
    assert found["Patient"][0]["name"][0]["family"] == FAMILY


def test_only_the_requester_may_poll_download_or_cancel_and_others_are_audited(
    people: People, fhir: TestClient, runtime: Runtime
) -> None:
    upload_raw(fhir, people.patient_a, pdf_bytes(3000))
    status_url = kick_off(people.clinician)
    manifest = manifest_of(people.clinician, runtime, status_url)
    file_url = manifest["output"][0]["url"]
    for intruder in (fhir, people.patient, people.admin):
        assert intruder.get(status_url).status_code == 404
        assert intruder.get(file_url).status_code == 404
        assert intruder.delete(status_url).status_code == 404
    export_id = status_url.rsplit("/", 1)[1]
    refused = [e for e in events(runtime, "access.denied") if e.resource_id == export_id]
    assert len(refused) == 9
    assert {e.resource_type for e in refused} == {"BulkExport"}
    # A made-up id is simply not found, and the requester still has theirs.
    assert fhir.get(f"/fhir/$export-status/{uuid.uuid4()}").status_code == 404
    assert people.clinician.get(file_url).status_code == 200


def test_cancel_deletes_the_files_and_the_export(fhir: TestClient, runtime: Runtime) -> None:
    create_patient(fhir)
    status_url = kick_off(fhir)
    manifest = manifest_of(fhir, runtime, status_url)
    assert _stored(runtime)
    cancelled = fhir.delete(status_url)
    assert cancelled.status_code == 202
    assert fhir.get(status_url).status_code == 404
    assert fhir.get(manifest["output"][0]["url"]).status_code == 404
    assert fhir.delete(status_url).status_code == 404
    assert _stored(runtime) == {}
    assert len(events(runtime, "fhir.bulk_export.cancel")) == 1
    # Cancelled before it ran: the job never writes anything.
    pending = kick_off(fhir)
    assert fhir.get(pending).status_code == 202
    assert fhir.delete(pending).status_code == 202
    run_exports(runtime)
    assert _stored(runtime) == {}
    assert fhir.get(pending).status_code == 404


def test_status_reports_progress_until_done(fhir: TestClient, runtime: Runtime) -> None:
    create_patient(fhir)
    status_url = kick_off(fhir)
    waiting = fhir.get(status_url)
    assert waiting.status_code == 202
    assert waiting.headers["X-Progress"] == "queued"
    assert waiting.headers["Retry-After"] == "1"
    assert run_exports(runtime) == 1
    done = fhir.get(status_url)
    assert done.status_code == 200
    assert done.headers["content-type"].startswith("application/json")


def test_expired_exports_are_gone_with_their_files(
    app: FastAPI, fhir: TestClient, runtime: Runtime
) -> None:
    create_patient(fhir)
    status_url = kick_off(fhir)
    manifest = manifest_of(fhir, runtime, status_url)
    assert len(_stored(runtime)) == len(manifest["output"])
    # An orphan left by a crashed job (blob durable, row never written) goes too, once
    # older than the grace period.
    orphan = f"{BLOB_PREFIX}{uuid.uuid4()}/{uuid.uuid4()}"
    writer = runtime.blobs.writer(orphan)
    writer.write(b"ciphertext")
    writer.commit()
    ttl = runtime.settings.bulk_export_ttl_seconds
    later = utcnow() + timedelta(seconds=ttl + 60)
    report = expire_exports(runtime, grace_seconds=30, now=later)
    assert report.summary() == {"expired": 1, "files": len(manifest["output"]), "orphans": 1}
    assert _stored(runtime) == {}
    assert fhir.get(status_url).status_code == 404
    assert fhir.get(manifest["output"][0]["url"]).status_code == 404
    assert len(events(runtime, "fhir.bulk_export.expire")) == 1
    # Nothing left to do on the next run.
    assert expire_exports(runtime, grace_seconds=30, now=later).summary()["expired"] == 0


def test_every_included_patient_is_audited_once_and_downloads_too(
    fhir: TestClient, runtime: Runtime
) -> None:
    with_documents = [create_patient(fhir) for _ in range(3)]
    for index, patient in enumerate(with_documents):
        upload_raw(fhir, patient, pdf_bytes(1000 + index))
    status_url = kick_off(fhir, _type="DocumentReference")
    without = create_patient(fhir)  # registered after the kick-off, before the run
    manifest = manifest_of(fhir, runtime, status_url)
    included = events(runtime, "fhir.bulk_export.include")
    export_id = status_url.rsplit("/", 1)[1]
    assert sorted(str(e.patient_id) for e in included) == sorted(with_documents)
    assert all(e.resource_id == export_id for e in included)
    assert all(e.details == {"resources": {"DocumentReference": 1}} for e in included)
    assert without not in {str(e.patient_id) for e in included}
    assert len(events(runtime, "fhir.bulk_export.start")) == 1
    assert len(events(runtime, "fhir.bulk_export.manifest")) == 1
    download(fhir, manifest)
    downloads = events(runtime, "fhir.bulk_export.download")
    assert [e.details["type"] for e in downloads] == ["DocumentReference"]


def test_a_system_export_is_refused_to_a_clinician_and_accepted_for_a_token(
    people: People, fhir: TestClient
) -> None:
    assert people.clinician.get("/fhir/$export", headers=PREFER).status_code == 403
    assert people.admin.get("/fhir/$export", headers=PREFER).status_code == 202
    assert fhir.get("/fhir/$export", headers=PREFER).status_code == 202
