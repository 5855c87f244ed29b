"""Content the malware scanner has not cleared is never served, on any route.

Runs on both backends with the real clamd of this module (``clamd`` fixture): uploads
go through the REST API, the worker (``medvault.jobs.build_worker``) scans them, and
every content route (REST, FHIR Binary raw and JSON, the portal, signed links) is read.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.documents.models import ScanState
from medvault.documents.reading import SCAN_RETRY_AFTER_SECONDS, Quarantined, ScanPending
from medvault.processing import queue
from medvault.processing.models import JobState
from medvault.runtime import Runtime
from tests.processing.scanning_world import (
    BODY_REPORTED_NAME,
    EICAR_PDF,
    assert_every_route_refuses,
    assert_every_route_serves,
    assert_refused,
    content_world,
    drain,
    scan_job,
    scanning_backend,
    version_row,
)
from tests.support.backends import Backend
from tests.support.clamd import ClamdServer
from tests.support.factories import pdf_bytes
from tests.support.inspect import audit_events, audit_rows
from tests.support.portal import post_form
from tests.support.users import UserFactory

RETRY_AFTER = str(SCAN_RETRY_AFTER_SECONDS)


@pytest.fixture
def scan_policy() -> str:
    """The default policy; a test parametrized on ``scan_policy`` overrides it."""
    return "blocking"


@pytest.fixture
def backend(backend: Backend, clamd: ClamdServer, scan_policy: str) -> Backend:
    """Each backend of tests/conftest.py, scanning with this module's clamd."""
    return scanning_backend(backend, clamd, scan_policy)


# Infected is never served, whatever the policy: "async" only serves what is pending.
@pytest.mark.parametrize("scan_policy", ["blocking", "async"])
def test_an_infected_upload_is_never_served_on_any_route(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> None:
    with content_world(app, runtime, client, make_user, EICAR_PDF) as world:
        assert version_row(runtime, world.document_id).scan_state == ScanState.PENDING
        assert drain(runtime) >= 1

        version = version_row(runtime, world.document_id)
        assert (version.scan_state, version.scan_signature) == (
            ScanState.INFECTED,
            BODY_REPORTED_NAME,
        )
        (alarm,) = audit_events(runtime, "document.version.quarantined")
        assert (alarm.resource_id, alarm.outcome) == (str(version.id), "failure")
        assert_every_route_refuses(world, Quarantined)

        # The link issued while it was pending is refused (above); no new one is issued,
        # through the API or the portal's share form, and each refusal is audited.
        attempts = {
            "api": world.api.post(f"/api/v1/documents/{world.document_id}/download-url"),
            "portal": post_form(
                world.portal,
                f"/documents/{world.document_id}/link",
                {"minutes": "10"},
                headers={"Accept": "application/json"},
            ),
        }
        for face, response in attempts.items():
            assert_refused(response, Quarantined, f"{face} link issue")
        refusals = [
            e
            for e in audit_rows(runtime)
            if (e.action, e.outcome) == ("document.download_url.issue", "failure")
        ]
        assert len(refusals) == len(attempts)

        # Another run finds nothing left to do: the verdict stands.
        assert drain(runtime) == 0
        assert version_row(runtime, world.document_id).scan_state == ScanState.INFECTED


def test_a_clean_upload_becomes_clean_and_is_served_everywhere(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> None:
    with content_world(app, runtime, client, make_user, pdf_bytes(150_000)) as world:
        drain(runtime)
        version = version_row(runtime, world.document_id)
        assert (version.scan_state, version.scan_signature) == (ScanState.CLEAN, None)
        assert version.scan_engine is not None and version.scan_engine.startswith("ClamAV")
        assert version.scanned_at is not None
        assert_every_route_serves(world)
        assert audit_events(runtime, "document.version.quarantined") == []


@pytest.mark.parametrize("scan_policy", ["blocking", "async"])
def test_a_pending_version_is_served_only_under_the_async_policy(
    app: FastAPI,
    runtime: Runtime,
    client: TestClient,
    make_user: UserFactory,
    scan_policy: str,
) -> None:
    with content_world(app, runtime, client, make_user, pdf_bytes(20_000)) as world:
        assert version_row(runtime, world.document_id).scan_state == ScanState.PENDING
        if scan_policy == "blocking":
            assert_every_route_refuses(world, ScanPending, retry_after=RETRY_AFTER)
        else:
            assert_every_route_serves(world)

        drain(runtime)
        assert version_row(runtime, world.document_id).scan_state == ScanState.CLEAN
        assert_every_route_serves(world)


def test_clamd_down_fails_the_scan_then_a_retry_clears_the_version(
    app: FastAPI,
    runtime: Runtime,
    client: TestClient,
    make_user: UserFactory,
    clamd: ClamdServer,
) -> None:
    with content_world(app, runtime, client, make_user, pdf_bytes(20_000)) as world:
        version_id = version_row(runtime, world.document_id).id
        content_path = f"/api/v1/documents/{world.document_id}/content"
        clamd.stop()  # this module's own clamd, started again below whatever happens
        try:
            drain(runtime)
            job = scan_job(runtime, version_id)
            assert (job.state, job.attempts) == (JobState.READY, 1)
            assert job.last_error is not None and "clamd unreachable" in job.last_error
            # Backed off, not dropped: it comes back later on its own.
            assert job.run_after > job.updated_at
            assert version_row(runtime, world.document_id).scan_state == ScanState.FAILED
            refused = world.api.get(content_path)
            assert_refused(refused, ScanPending, "clamd down")
            assert refused.headers["retry-after"] == RETRY_AFTER
            (event,) = audit_events(runtime, "document.content.read", outcome="failure")
            assert event.details["problem"] == ScanPending.slug
        finally:
            clamd.start()

        # An operator's retry makes it due now rather than after the backoff.
        with runtime.clinical.session() as session:
            assert queue.retry(session, job.id) is not None
            session.commit()
        assert drain(runtime) == 3  # the scan, then the preview and text it clears the way for
        assert scan_job(runtime, version_id).state == JobState.DONE
        assert version_row(runtime, world.document_id).scan_state == ScanState.CLEAN
        served = world.api.get(content_path)
        assert (served.status_code, served.content) == (200, world.content)
        assert len(audit_events(runtime, "document.content.read", outcome="success")) == 1
