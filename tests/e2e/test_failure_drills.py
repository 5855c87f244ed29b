"""Failure drills: stop one backing service under a running vault, then bring it back.

For each part (the clinical, auth and patient databases, the object store, Redis,
clamd) the drill checks five promises:

1. requests that need the missing part answer a clean 503 problem+json with
   ``Retry-After`` (never a 500, never a hang), and requests that do not keep working;
2. ``/readyz`` names what is missing, without any address or secret;
3. nothing half-written is left: no document row without its blob, no blob without
   its row, no other object in the bucket, no document from a refused upload;
4. the same vault process recovers when the part comes back, without a restart;
5. every document the API acknowledged reads back byte for byte, and the audit log
   still verifies, with every event sealed again.

Every part is the test's own (``tests/e2e/drill_stack.py``), never the machine's shared
PostgreSQL or Redis. The drills share one stack and run in order; each starts from a
ready vault and leaves one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from medvault.kit.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE
from tests.e2e.drill_stack import DrillStack, drill_stack

Requests = Callable[[DrillStack], dict[str, httpx.Response]]


@dataclass(frozen=True)
class Drill:
    """One part to take away: how, what must be refused meanwhile, and what must not."""

    part: str  # its key in /readyz's checks
    stop: Callable[[DrillStack], None]
    start: Callable[[DrillStack], None]
    refused: Requests  # need the part: 503 while it is down, success once it is back
    working: Requests  # do not need it: succeed throughout
    # Required parts take the instance out of a load balancer (/readyz 503); the others
    # are reported (200, "degraded"), since every instance shares them and removing
    # all instances would turn a partial outage into a total one.
    required: bool = True


def _anonymous(stack: DrillStack) -> dict[str, httpx.Response]:
    return {
        "healthz": stack.anonymous("/healthz"),
        "fhir metadata": stack.anonymous("/fhir/metadata"),
    }


def _old_document(stack: DrillStack) -> str:
    return next(iter(stack.acknowledged))


def _clamd_working(stack: DrillStack) -> dict[str, httpx.Response]:
    # Accepted while clamd is down: the scan job waits and retries.
    upload = stack.upload()
    if upload.status_code == 201:
        stack.scratch["unscanned"] = upload.json()["id"]
    return {
        "upload": upload,
        "old download": stack.download(_old_document(stack)),
        "me": stack.me(),
    }


def _clamd_refused(stack: DrillStack) -> dict[str, httpx.Response]:
    # Blocking scan policy: a version nobody could scan yet is not served.
    return {"unscanned download": stack.download(stack.scratch["unscanned"])}


DRILLS = [
    Drill(
        part="clinical_database",
        stop=lambda s: s.databases["clinical"].stop(),
        start=lambda s: s.databases["clinical"].start(),
        refused=lambda s: {
            "upload": s.upload(),
            "download": s.download(_old_document(s)),
            "metadata": s.metadata(_old_document(s)),
            # A login's audit event goes to the clinical database: no event, no login.
            "login": s.login(),
        },
        working=lambda s: {"me": s.me(), **_anonymous(s)},
    ),
    Drill(
        part="auth_database",
        stop=lambda s: s.databases["auth"].stop(),
        start=lambda s: s.databases["auth"].start(),
        # Every credential is checked against the auth database (revocations are seen
        # at once), so without it nobody is authenticated: refused, not let through.
        refused=lambda s: {
            "me": s.me(),
            "download": s.download(_old_document(s)),
            "upload": s.upload(),
            "login": s.login(),
        },
        working=_anonymous,
    ),
    Drill(
        part="patient_database",
        stop=lambda s: s.databases["patients"].stop(),
        start=lambda s: s.databases["patients"].start(),
        # Demographics, and every check that a patient exists (an upload's target, a
        # document's reach), live there: refused. Who the caller is does not.
        refused=lambda s: {
            "patient": s.http.get(f"/api/v1/patients/{s.patient}"),
            "upload": s.upload(),
        },
        working=lambda s: {"me": s.me(), **_anonymous(s)},
    ),
    Drill(
        part="blob_store",
        stop=lambda s: s.s3.stop(),
        start=lambda s: s.s3.start(),
        refused=lambda s: {"upload": s.upload(), "download": s.download(_old_document(s))},
        working=lambda s: {
            "me": s.me(),
            "list": s.http.get("/api/v1/documents", params={"patient_id": s.patient}),
            "metadata": s.metadata(_old_document(s)),
            "login": s.login(),
            **_anonymous(s),
        },
    ),
    Drill(
        part="redis",
        stop=lambda s: s.redis.stop(),
        start=lambda s: s.redis.start(),
        # Failed-login limits fail closed (brute-force protection must not lapse);
        # the upload limit fails open (README "Failure behaviour").
        refused=lambda s: {"login": s.login()},
        working=lambda s: {
            "upload": s.upload(),
            "download": s.download(_old_document(s)),
            "me": s.me(),
        },
        required=False,
    ),
    Drill(
        part="clamd",
        stop=lambda s: s.clamd.stop(),
        start=lambda s: s.clamd.start(),
        refused=_clamd_refused,
        working=_clamd_working,
        required=False,
    ),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DrillStack]:
    with drill_stack(tmp_path) as running:
        first = running.upload()
        assert first.status_code == 201, first.text
        running.wait_until(
            "the first upload's scan",
            lambda: running.download(first.json()["id"]).status_code == 200,
        )
        yield running


def _assert_clean_503(label: str, response: httpx.Response, stack: DrillStack) -> None:
    where = f"{label}: {response.status_code} {response.text[:500]}"
    assert response.status_code == 503, where
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE), where
    assert int(response.headers["Retry-After"]) > 0, where
    body = response.json()
    assert body["status"] == 503 and body["type"].startswith(PROBLEM_TYPE_BASE), where
    _assert_nothing_leaks(response.text, stack, where)


def _assert_nothing_leaks(text: str, stack: DrillStack, where: str) -> None:
    # No address, driver message or credential of any part.
    for secret in ("127.0.0.1", "postgresql", "redis://", "tcp://", stack.s3.endpoint_url):
        assert secret not in text, where


def _sealed_and_sound(stack: DrillStack) -> bool:
    # Polled, not asserted once: the live sealer may be between writing a checkpoint
    # and its witness file when this reads them. A real fault never clears.
    report = stack.audit_log()
    return report.healthy and report.unsealed == 0


def _all_succeed(responses: dict[str, httpx.Response]) -> bool:
    return all(200 <= response.status_code < 300 for response in responses.values())


def test_each_part_fails_cleanly_and_recovers_without_a_restart(stack: DrillStack) -> None:
    """The drills in turn, on one stack: one test rather than one per drill, so that
    pytest-xdist cannot hand them to two workers that would each start a whole stack."""
    for drill in DRILLS:
        try:
            _drill(stack, drill)
        except AssertionError as failure:
            raise AssertionError(f"drill {drill.part}: {failure}") from failure


def _drill(stack: DrillStack, drill: Drill) -> None:
    stack.wait_until("readiness before the drill", lambda: stack.readiness().status_code == 200)
    pid, starts = stack.vault.pid, stack.vault.starts
    documents_before = set(stack.acknowledged)

    drill.stop(stack)
    try:
        # 1. What needs the part is refused cleanly; what does not still works.
        for label, response in drill.working(stack).items():
            assert 200 <= response.status_code < 300, (
                f"{label} should work without {drill.part}: {response.status_code} "
                f"{response.text[:500]}"
            )
        for label, response in drill.refused(stack).items():
            _assert_clean_503(label, response, stack)
        # 2. Readiness names the missing part (and only says so).
        ready = stack.readiness()
        assert ready.status_code == (503 if drill.required else 200), ready.text
        assert ready.json()["checks"][drill.part] == "unavailable", ready.text
        if not drill.required:
            assert ready.json()["status"] == "degraded", ready.text
        _assert_nothing_leaks(ready.text, stack, "readyz")
    finally:
        drill.start(stack)

    # 4. The same process recovers: readiness, then every refused request succeeds.
    stack.wait_until(
        "readiness after the part came back",
        lambda: stack.readiness().json()["checks"][drill.part] == "ok",
    )
    stack.wait_until("the refused requests to succeed", lambda: _all_succeed(drill.refused(stack)))
    assert (stack.vault.pid, stack.vault.starts) == (pid, starts) and stack.vault.alive

    # 3. Nothing half-written: rows and blobs match one to one, no other object is left
    # in the bucket, and the patient has exactly the documents the API acknowledged.
    report = stack.integrity()
    assert report.healthy and report.orphans == 0, report
    assert stack.stray_objects() == []
    listed = stack.http.get(
        "/api/v1/documents", params={"patient_id": stack.patient, "status": "all", "limit": 200}
    )
    assert listed.status_code == 200, listed.text
    assert {item["id"] for item in listed.json()["items"]} == set(stack.acknowledged)
    assert documents_before <= set(stack.acknowledged)

    # The audit log lost nothing either: it verifies, and the sealer (which met the
    # outage too) seals every event again.
    stack.wait_until("the sealer to catch up", lambda: _sealed_and_sound(stack))

    # 5. Every acknowledged document reads back exactly.
    for document_id, digest in stack.acknowledged.items():
        content = stack.download(document_id)
        assert content.status_code == 200, content.text
        assert hashlib.sha256(content.content).hexdigest() == digest
