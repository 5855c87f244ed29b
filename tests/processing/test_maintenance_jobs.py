"""The periodic maintenance jobs on both backends: FHIR draft expiry and the integrity scrub.

Both run as a worker runs them (armed by housekeeping, claimed, result stored), and
each is also called directly where a parameter (a TTL, a period, a rate) matters.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from medvault.documents import repository
from medvault.documents.models import Document, DocumentStatus, DocumentVersion, VersionState
from medvault.fhir.drafts import expire_drafts
from medvault.fhir.models import BinaryDraft
from medvault.jobs import build_worker
from medvault.kit.clock import utcnow
from medvault.processing import kinds
from medvault.processing.models import Job
from medvault.processing.scrub import scrub
from medvault.runtime import Runtime
from tests.documents.test_integrity import INTEGRITY_PROBLEM, flip_byte
from tests.fhir.support import document_reference, fhir_client, post_resource
from tests.processing.jobs_support import drain, first_version, job_result
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events

PERIOD = timedelta(days=30)


def run_periodic(runtime: Runtime, kind: str) -> dict[str, object]:
    """Arm the periodic kinds as a worker's housekeeping does, run all due jobs, and
    return ``kind``'s stored result."""
    worker = build_worker(runtime)
    worker.housekeeping()
    # A periodic kind first runs one interval after it was armed: make it due now.
    with runtime.clinical.session() as session:
        session.execute(
            update(Job).where(Job.dedupe_key.like("periodic:%")).values(run_after=utcnow())
        )
        session.commit()
    drain(worker)
    with runtime.clinical.read_session() as session:
        job = session.scalars(select(Job).where(Job.dedupe_key == f"periodic:{kind}")).one()
    return job_result(runtime, job.id)


def post_binary(fhir: TestClient, patient: str) -> tuple[str, str]:
    """``POST /fhir/Binary`` naming a patient: a draft. Returns (Binary id, document id)."""
    stored = fhir.post(
        "/fhir/Binary",
        content=pdf_bytes(8000),
        headers={"content-type": "application/pdf", "X-Security-Context": f"Patient/{patient}"},
    )
    assert stored.status_code == 201, stored.text
    binary = stored.json()
    return binary["id"], binary["securityContext"]["reference"].split("/")[1]


def _document(runtime: Runtime, document_id: str) -> tuple[Document, list[DocumentVersion]]:
    with runtime.clinical.read_session() as session:
        document = session.get(Document, uuid.UUID(document_id))
        assert document is not None
        return document, repository.versions(session, document.id)


def test_undescribed_binary_drafts_expire_after_the_ttl(
    runtime: Runtime, app: FastAPI, api_token: str
) -> None:
    ttl = runtime.settings.binary_draft_ttl_seconds
    with fhir_client(app, api_token) as fhir:
        patient = create_patient(fhir)
        _, old = post_binary(fhir, patient)
        _, young = post_binary(fhir, patient)
        described_binary, described = post_binary(fhir, patient)
        claimed = post_resource(
            fhir,
            "/fhir/DocumentReference",
            document_reference(patient, url=f"Binary/{described_binary}"),
        )
        assert claimed.status_code == 201, claimed.text
        with runtime.clinical.session() as session:
            # Stored a TTL and a day ago; the described one has no draft row left to age.
            session.execute(
                update(BinaryDraft)
                .where(BinaryDraft.document_id != uuid.UUID(young))
                .values(created_at=utcnow() - timedelta(seconds=ttl, days=1))
            )
            session.commit()
        old_key = first_version(runtime, old).storage_key

        assert expire_drafts(runtime, ttl_seconds=ttl, dry_run=True).expired == 1
        assert runtime.blobs.exists(old_key)  # a dry run changes nothing

        assert run_periodic(runtime, kinds.FHIR_DRAFT_EXPIRY) == {"expired": 1}

        document, versions = _document(runtime, old)
        assert (document.status, document.deleted_by) == (
            DocumentStatus.DELETED,
            "system:fhir-draft-expiry",
        )
        assert [v.state for v in versions] == [VersionState.DESTROYED]
        assert not runtime.blobs.exists(old_key)
        # Deleted the way an administrator deletes: FHIR shows it as entered-in-error.
        assert fhir.get(f"/fhir/DocumentReference/{old}").json()["status"] == "entered-in-error"
        for kept in (young, described):
            document, versions = _document(runtime, kept)
            assert document.status == DocumentStatus.CURRENT
            assert runtime.blobs.exists(versions[0].storage_key)
            assert fhir.get(f"/fhir/DocumentReference/{kept}").json()["status"] == "current"
    with runtime.clinical.read_session() as session:
        drafts = set(session.scalars(select(BinaryDraft.document_id)))
    assert drafts == {uuid.UUID(young)}
    [event] = audit_events(runtime, "fhir.binary.expired")
    assert (event.resource_id, str(event.patient_id), event.actor_id) == (
        old,
        patient,
        "system:fhir-draft-expiry",
    )
    assert expire_drafts(runtime, ttl_seconds=ttl).expired == 0  # nothing left to expire


def _age_versions(runtime: Runtime, by: timedelta) -> None:
    """Make every version due for the scrub, as if stored (and last verified) long ago."""
    with runtime.clinical.session() as session:
        session.execute(
            update(DocumentVersion).values(created_at=utcnow() - by, verified_at=utcnow() - by)
        )
        session.commit()


def _verified(runtime: Runtime) -> dict[uuid.UUID, bool]:
    cutoff = utcnow() - timedelta(minutes=5)
    with runtime.clinical.read_session() as session:
        rows = session.execute(select(DocumentVersion.id, DocumentVersion.verified_at))
        return {vid: at is not None and at > cutoff for vid, at in rows}


def test_the_scrub_verifies_due_versions_and_flags_a_tampered_blob(
    runtime: Runtime, client: TestClient
) -> None:
    patient = create_patient(client)
    documents = [upload_raw(client, patient, pdf_bytes(150_000)).json()["id"] for _ in range(2)]
    versions = [first_version(runtime, d) for d in documents]
    # Their fhir-sha1 jobs first: they read the blobs too, and would raise the alarm.
    drain(build_worker(runtime))
    with runtime.clinical.session() as session:
        session.execute(update(DocumentVersion).values(verified_at=None))
        session.commit()
    # Stored just now: not due for a whole period.
    assert scrub(runtime, time_slice=timedelta(minutes=5), period=PERIOD).checked == 0

    with runtime.clinical.session() as session:
        session.execute(update(DocumentVersion).values(created_at=utcnow() - PERIOD * 2))
        session.commit()
    clean = scrub(runtime, time_slice=timedelta(minutes=5), period=PERIOD)
    assert clean.summary() == {
        "checked": 2,
        "bytes": sum(v.size for v in versions),
        "failed": 0,
        "still_due": 0,
    }
    assert set(_verified(runtime).values()) == {True}
    assert scrub(runtime, time_slice=timedelta(minutes=5), period=PERIOD).checked == 0

    tampered = versions[0]
    flip_byte(runtime, tampered.storage_key, -1)  # the last segment's tag
    _age_versions(runtime, PERIOD * 2)
    result = run_periodic(runtime, kinds.INTEGRITY_SCRUB)
    assert (result["checked"], result["failed"], result["still_due"]) == (2, 1, 0)
    assert first_version(runtime, documents[0]).state == VersionState.CORRUPT
    assert first_version(runtime, documents[1]).state == VersionState.AVAILABLE
    [alarm] = audit_events(runtime, "document.version.integrity_failed")
    assert (alarm.resource_id, alarm.actor_id, alarm.outcome) == (
        str(tampered.id),
        "system:integrity-scrub",
        "failure",
    )
    # Marked verified even though it failed: the alarm is not repeated every hour.
    assert set(_verified(runtime).values()) == {True}
    refused = client.get(f"/api/v1/documents/{documents[0]}/content")
    assert (refused.status_code, refused.json()["type"]) == (500, INTEGRITY_PROBLEM)
    assert client.get(f"/api/v1/documents/{documents[1]}/content").status_code == 200


def test_the_scrub_keeps_to_its_rate_and_stops_when_told(
    runtime: Runtime, client: TestClient
) -> None:
    patient = create_patient(client)
    for _ in range(3):
        upload_raw(client, patient, pdf_bytes(20_000))
    _age_versions(runtime, PERIOD * 2)
    asked: list[float] = []

    def stop_at_once(seconds: float) -> bool:
        asked.append(seconds)
        return True  # the worker is shutting down

    # 1 kB/s: after the first 20 kB version the scrub owes about 20 s of waiting.
    report = scrub(
        runtime,
        time_slice=timedelta(minutes=5),
        period=PERIOD,
        max_bytes_per_second=1000,
        wait=stop_at_once,
    )
    assert report.checked == 1 and len(asked) == 1 and asked[0] > 10
    assert sorted(_verified(runtime).values()) == [False, False, True]
    # The next run picks up where this one stopped.
    rest = scrub(runtime, time_slice=timedelta(minutes=5), period=PERIOD, wait=lambda _s: False)
    assert rest.checked == 2
    assert set(_verified(runtime).values()) == {True}
