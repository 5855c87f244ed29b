"""The portal's "Verify now": a background job, its progress page and its result.

The app's embedded worker is off in tests, so each test runs the queued jobs itself
(``drain``: ``medvault.jobs.build_worker(runtime).run_one()`` until none is due; the
practice's uploads queued their SHA-1 jobs first), as a worker thread would. Both
backends; the browser scenario (tests/web/test_scenarios.py) clicks through the same
pages in Chromium.
"""

from __future__ import annotations

import html
import re
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from medvault.audit.models import AuditEvent
from medvault.audit.sealer import seal_pending
from medvault.processing import kinds, queue
from medvault.processing.models import Job, JobState
from medvault.runtime import Runtime
from tests.processing.scanning_world import drain
from tests.support.inspect import audit_events
from tests.support.portal import post_form
from tests.web.portal_world import Practice

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)

_JOB_PAGE = re.compile(r"^/audit/verify/([0-9a-f-]{36})$")
_REFRESH = '<meta http-equiv="refresh" content="2">'


def _request(browser: TestClient) -> str:
    """Press "Verify now"; returns the job id the answer redirects to."""
    response = post_form(browser, "/audit/verify", {}, follow_redirects=False)
    assert response.status_code == 303, response.text
    match = _JOB_PAGE.match(response.headers["location"])
    assert match, response.headers["location"]
    return match.group(1)


def _job(runtime: Runtime, job_id: str) -> Job:
    with runtime.clinical.read_session() as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job


def _text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def test_verify_now_queues_a_job_whose_page_shows_progress_then_the_result(
    practice: Practice,
) -> None:
    runtime = practice.runtime
    seal_pending(runtime=runtime)
    auditor = practice.users["auditor"]
    with practice.browser("auditor") as browser:
        job_id = _request(browser)
        job = _job(runtime, job_id)
        assert (job.kind, job.state, job.dedupe_key) == (
            kinds.AUDIT_VERIFY,
            JobState.READY,
            "audit-verify",
        )
        assert job.payload == f'{{"requested_by": "user:{auditor.id}"}}'
        (requested,) = audit_events(runtime, "audit.verify.requested")
        assert requested.actor_id == f"user:{auditor.id}"
        assert requested.details == {"job_id": job_id, "via": "portal"}

        waiting = browser.get(f"/audit/verify/{job_id}")
        assert waiting.status_code == 200
        assert _REFRESH in waiting.text
        assert 'data-verify-state="ready"' in waiting.text
        assert "data-verify-result" not in waiting.text
        # The visitor may stop the refresh (WCAG 2.2.1); the page still shows the state.
        still = browser.get(f"/audit/verify/{job_id}?refresh=off")
        assert _REFRESH not in still.text and 'data-verify-state="ready"' in still.text

        # Asked again while it waits: the same job, not a second one.
        assert _request(browser) == job_id

        drain(runtime)
        done = browser.get(f"/audit/verify/{job_id}")
        assert done.status_code == 200
        assert _REFRESH not in done.text
        assert 'data-verify-result="ok"' in done.text
        assert "The audit log verified." in _text(done)
        result = _job(runtime, job_id)
        assert result.state == JobState.DONE
        assert result.progress is not None  # the run reported done/total as it went
        # The verification itself is on record, naming who asked.
        (verified,) = audit_events(runtime, "audit.verify")
        assert verified.actor_id == "system:audit-verify"
        assert verified.details is not None
        assert verified.details["requested_by"] == f"user:{auditor.id}"
        assert verified.details["healthy"] is True

        # A finished verification is run again on the same row, from the start.
        assert _request(browser) == job_id
        again = _job(runtime, job_id)
        assert (again.state, again.result, again.progress) == (JobState.READY, None, None)
        assert _REFRESH in browser.get(f"/audit/verify/{job_id}").text


def test_a_tampered_log_shows_the_failure_and_its_findings(practice: Practice) -> None:
    runtime = practice.runtime
    seal_pending(runtime=runtime)
    with runtime.clinical.session() as session:
        first = session.scalars(select(AuditEvent).where(AuditEvent.leaf_index == 0)).one()
        session.execute(
            update(AuditEvent).where(AuditEvent.id == first.id).values(action="edited.later")
        )
        session.commit()
    with practice.browser("auditor") as browser:
        job_id = _request(browser)
        drain(runtime)
        page = browser.get(f"/audit/verify/{job_id}")
    text = _text(page)
    assert page.status_code == 200
    assert 'data-verify-result="failed"' in page.text
    assert "The first bad event is at leaf index 0." in text
    assert "<h2>Findings</h2>" in page.text and "edited" in text


def test_a_dead_job_is_shown_as_an_error_not_as_a_verdict(practice: Practice) -> None:
    runtime = practice.runtime
    with practice.browser("auditor") as browser:
        job_id = _request(browser)
        with runtime.clinical.session() as session:
            # What the queue records when the last attempt failed (queue.fail).
            session.execute(
                update(Job)
                .where(Job.id == uuid.UUID(job_id))
                .values(state=JobState.DEAD, last_error="OperationalError")
            )
            session.commit()
        page = browser.get(f"/audit/verify/{job_id}")
    text = _text(page)
    assert page.status_code == 200
    assert 'data-verify-result="error"' in page.text
    assert "could not be completed" in text and "OperationalError" in text
    assert "says nothing about the log itself" in text
    assert _REFRESH not in page.text


def test_only_auditors_see_a_verification_and_only_verification_jobs(
    practice: Practice,
) -> None:
    runtime = practice.runtime
    with practice.browser("auditor") as browser:
        job_id = _request(browser)
        with runtime.clinical.session() as session:
            other = queue.enqueue(session, kinds.FHIR_SHA1, {"version_id": str(uuid.uuid4())})
            session.commit()
            other_id = str(other.id)
        # Another kind of job is not a verification: its row names documents.
        assert browser.get(f"/audit/verify/{other_id}").status_code == 404
        assert browser.get(f"/audit/verify/{uuid.uuid4()}").status_code == 404
        assert browser.get("/audit/verify/not-an-id").status_code == 404
    for role in ("patient", "clinician", "admin"):
        with practice.browser(role) as browser:
            assert browser.get(f"/audit/verify/{job_id}").status_code == 403, role
            refused = post_form(browser, "/audit/verify", {}, follow_redirects=False)
            assert refused.status_code == 403, role
    # Refused requests queue nothing and are not recorded as requests.
    assert len(audit_events(runtime, "audit.verify.requested", outcome="success")) == 1
    with runtime.clinical.read_session() as session:
        verifications = session.scalars(select(Job).where(Job.kind == kinds.AUDIT_VERIFY)).all()
    assert [str(job.id) for job in verifications] == [job_id]
