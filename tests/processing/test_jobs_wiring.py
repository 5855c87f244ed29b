"""``medvault.jobs`` wiring on both backends: the kinds, FHIR's SHA-1 after the upload,
the embedded worker thread, audit verification, and what /readyz and /metrics report.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from medvault.app import create_app
from medvault.auth.principal import Role
from medvault.jobs import build_registry, build_worker
from medvault.kit.clock import utcnow
from medvault.processing import kinds, queue
from medvault.processing.models import Job, JobState, WorkerBeat
from medvault.runtime import Runtime, build_runtime
from tests.fhir.support import fhir_client, sha1_b64
from tests.processing.jobs_support import (
    drain,
    enqueue,
    first_version,
    job_result,
    make_due,
    stored_job,
    wait_for,
)
from tests.support.backends import SettingsFactory
from tests.support.factories import create_patient, pdf_bytes, upload_multipart, upload_raw
from tests.support.inspect import audit_events
from tests.support.users import UserFactory, bearer, login

PERIODIC = {
    kinds.RECONCILE,
    kinds.FHIR_DRAFT_EXPIRY,
    kinds.INTEGRITY_SCRUB,
    kinds.APPRAISAL,
    kinds.EXPORT_EXPIRY,
    kinds.FHIR_BULK_EXPORT_EXPIRY,
}


def sha1_job(runtime: Runtime, document_id: str) -> Job:
    key = kinds.sha1_key(first_version(runtime, document_id).id)
    with runtime.clinical.read_session() as session:
        return session.scalars(select(Job).where(Job.dedupe_key == key)).one()


def test_the_registry_binds_every_kind_and_scans_only_with_a_scanner(
    runtime: Runtime, make_settings: SettingsFactory
) -> None:
    registry = build_registry(runtime)
    on_demand = {kinds.FHIR_SHA1, kinds.AUDIT_VERIFY, kinds.PREVIEW, kinds.TEXT}
    on_demand |= {kinds.SEARCH_INDEX, kinds.SEARCH_REINDEX}
    on_demand |= {kinds.DESTROY, kinds.PATIENT_EXPORT}
    on_demand |= {kinds.FHIR_BULK_EXPORT}
    assert set(registry.kinds) == {*on_demand, *PERIODIC}
    assert {k.name for k in registry.kinds.values() if k.every is not None} == PERIODIC
    scanning = build_runtime(make_settings(clamd_url="tcp://127.0.0.1:3310"))
    try:
        assert set(build_registry(scanning).kinds) == {kinds.SCAN, *registry.kinds}
    finally:
        scanning.close()


def test_fhir_sha1_is_absent_until_the_job_runs_then_correct(
    runtime: Runtime, app: FastAPI, api_token: str
) -> None:
    with fhir_client(app, api_token) as fhir:
        patient = create_patient(fhir)
        contents = {
            upload_raw(fhir, patient, body).json()["id"]: body
            for body in (pdf_bytes(3 * 1024 * 1024 + 17), pdf_bytes(100))
        }
        form_body = pdf_bytes(5000)
        contents[upload_multipart(fhir, patient, form_body).json()["id"]] = form_body
        for document_id in contents:
            resource = fhir.get(f"/fhir/DocumentReference/{document_id}").json()
            assert "hash" not in resource["content"][0]["attachment"]
            assert sha1_job(runtime, document_id).state == JobState.READY

        assert drain(build_worker(runtime)) >= len(contents)

        for document_id, body in contents.items():
            resource = fhir.get(f"/fhir/DocumentReference/{document_id}").json()
            assert resource["content"][0]["attachment"]["hash"] == sha1_b64(body)
            job = sha1_job(runtime, document_id)
            assert (job.state, job_result(runtime, job.id)) == ("done", {"outcome": "hashed"})
    # Idempotent: a second run (a retry, another worker) finds the hash and keeps it.
    again = sha1_job(runtime, next(iter(contents)))
    with runtime.clinical.session() as session:
        assert queue.retry(session, again.id) is not None
        session.commit()
    assert drain(build_worker(runtime)) == 1
    assert job_result(runtime, again.id) == {"outcome": "present"}


def test_the_embedded_worker_thread_runs_jobs_and_leaves_on_shutdown(
    runtime: Runtime, make_settings: SettingsFactory, api_token: str
) -> None:
    # The app as ``medvault serve`` runs it: a worker thread beside the web server.
    served = build_runtime(make_settings(worker_poll_seconds=0.05))
    body = pdf_bytes(20_000)

    def beats() -> list[str]:
        with runtime.clinical.read_session() as session:
            return list(session.scalars(select(WorkerBeat.owner)))

    with TestClient(create_app(runtime=served, run_worker=True)) as embedded:
        embedded.headers["Authorization"] = f"Bearer {api_token}"
        document_id = upload_raw(embedded, create_patient(embedded), body).json()["id"]

        def hashed() -> bool:
            return first_version(runtime, document_id).sha1 is not None

        wait_for("the embedded worker to hash the upload", hashed)
        assert wait_for("the worker's beat", beats)
        resource = embedded.get(f"/fhir/DocumentReference/{document_id}").json()
        assert resource["content"][0]["attachment"]["hash"] == sha1_b64(body)
    # Leaving the lifespan stops the worker, which takes its beat with it.
    assert beats() == []


def test_the_audit_verify_job_records_its_result(runtime: Runtime, client: TestClient) -> None:
    create_patient(client)  # something in the log
    job_id = enqueue(runtime, kinds.AUDIT_VERIFY, {"requested_by": "user:pytest"}, max_attempts=2)
    assert drain(build_worker(runtime)) >= 1
    result = job_result(runtime, job_id)
    assert result["healthy"] is True and result["findings"] == []
    assert result["tree_size"] + result["unsealed"] >= 1
    [event] = audit_events(runtime, "audit.verify")
    assert event.actor_id == "system:audit-verify"
    assert event.details["requested_by"] == "user:pytest"


def _readyz(anon_client: TestClient) -> Any:
    response = anon_client.get("/readyz")
    # Workers are reported, never a reason to leave the load balancer.
    assert response.status_code == 200, response.text
    return response.json()


def test_readyz_is_degraded_while_due_jobs_wait_with_no_live_worker(
    runtime: Runtime, anon_client: TestClient
) -> None:
    job_id = enqueue(runtime, kinds.SCAN, {"version_id": "v"})
    fresh = _readyz(anon_client)
    assert fresh["status"] == "ready"  # due, but only just: nobody has missed it yet
    assert fresh["checks"]["workers"] == "ok"
    assert (fresh["workers"]["alive"], fresh["workers"]["due_jobs"]) == (0, 1)

    make_due(runtime, job_id, ago=timedelta(minutes=5))
    stalled = _readyz(anon_client)
    assert (stalled["status"], stalled["checks"]["workers"]) == ("degraded", "stalled")
    assert stalled["workers"]["oldest_due_seconds"] >= 300

    now = utcnow()
    with runtime.clinical.session() as session:
        session.add(WorkerBeat(owner="pytest-worker", started_at=now, seen_at=now))
        session.commit()
    alive = _readyz(anon_client)
    assert (alive["status"], alive["checks"]["workers"]) == ("ready", "ok")
    assert alive["workers"]["alive"] == 1

    with runtime.clinical.session() as session:
        session.execute(update(WorkerBeat).values(seen_at=now - timedelta(minutes=10)))
        session.commit()
    assert _readyz(anon_client)["status"] == "degraded"  # its beat stopped: it died


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_metrics_report_the_queue_to_admins(
    runtime: Runtime, client: TestClient, make_user: UserFactory
) -> None:
    admin = make_user(Role.ADMIN)
    token = login(client, admin.username, admin.password).json()["access_token"]

    def scrape() -> str:
        response = client.get("/metrics", headers=bearer(token))
        assert response.status_code == 200, response.text
        return str(response.text)

    waiting = enqueue(runtime, "metrics-probe", {})
    enqueue(runtime, "metrics-probe", {}, delay=timedelta(hours=1))
    make_due(runtime, waiting, ago=timedelta(minutes=3))
    document_id = upload_raw(client, create_patient(client), pdf_bytes(1000)).json()["id"]
    before = scrape()
    assert _sample(before, "medvault_jobs", kind="metrics-probe", state="ready") == 2
    assert _sample(before, "medvault_jobs", kind=kinds.FHIR_SHA1, state="ready") == 1
    oldest = _sample(before, "medvault_jobs_oldest_due_seconds", kind="metrics-probe")
    assert oldest is not None and oldest >= 180
    runs_before = _sample(before, "medvault_job_runs_total", kind=kinds.FHIR_SHA1, outcome="done")

    worker = build_worker(runtime)
    while worker.run_one():  # metrics-probe has no handler here: only fhir-sha1 runs
        pass
    assert sha1_job(runtime, document_id).state == JobState.DONE
    after = scrape()
    assert _sample(after, "medvault_jobs", kind=kinds.FHIR_SHA1, state="done") == 1
    assert _sample(after, "medvault_jobs", kind=kinds.FHIR_SHA1, state="ready") is None
    runs_after = _sample(after, "medvault_job_runs_total", kind=kinds.FHIR_SHA1, outcome="done")
    assert runs_after == (runs_before or 0) + 1
    assert stored_job(runtime, waiting).state == JobState.READY
    # Clinicians and the like see nothing of it.
    assert (
        client.get("/metrics", headers=bearer(_clinician_token(client, make_user))).status_code
        == 403
    )


def _clinician_token(client: TestClient, make_user: UserFactory) -> str:
    clinician = make_user(Role.CLINICIAN)
    return str(login(client, clinician.username, clinician.password).json()["access_token"])
