"""Shared by the scanning route tests: a vault wired to the test's clamd, and its reads.

The content routes, their clients and the audit action each one names come from
``tests/documents/test_content_routes.py`` (``ROUTES``, ``World``, ``_caller``, reused
rather than copied), so a route added there is checked against the scanner here too.
"""

from __future__ import annotations

import base64
import html
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from medvault.documents import repository
from medvault.documents.models import DocumentVersion
from medvault.fhir.wire.outcome import PROBLEM_SYSTEM
from medvault.jobs import build_worker
from medvault.kit.problems import PROBLEM_TYPE_BASE, Problem
from medvault.processing import kinds
from medvault.processing.models import Job
from medvault.runtime import Runtime
from tests.documents.test_content_routes import ROUTES, World, _caller
from tests.documents.test_content_routes import content_world as build_world
from tests.fhir.support import validate_response
from tests.support.backends import Backend
from tests.support.clamd import BODY_SIGNATURE_NAME, EICAR, ClamdServer
from tests.support.inspect import audit_rows
from tests.support.users import UserFactory

# The vault only takes real document types, so EICAR travels inside a PDF; the body
# signature of tests/support/clamd.py finds it there.
EICAR_PDF = b"%PDF-1.7\n" + EICAR + b"\n%%EOF\n"
BODY_REPORTED_NAME = f"{BODY_SIGNATURE_NAME}.UNOFFICIAL"
# A worker drains a handful of jobs per upload; more than this means one keeps coming back.
MAX_JOBS_PER_DRAIN = 50


def scanning_backend(backend: Backend, clamd: ClamdServer, scan_policy: str) -> Backend:
    """The test's backend, scanning every new version with ``clamd``."""
    merged = backend.settings.model_dump(exclude_unset=True)
    # A short timeout: a wedged clamd fails the test in seconds rather than two minutes.
    merged.update(clamd_url=clamd.address, scan_policy=scan_policy, clamd_timeout_seconds=10)
    return Backend(backend.name, type(backend.settings)(**merged))


def drain(runtime: Runtime) -> int:
    """Run the worker until no job is due; returns how many jobs it ran."""
    worker = build_worker(runtime, owner="pytest")
    for ran in range(MAX_JOBS_PER_DRAIN):
        if not worker.run_one():
            return ran
    raise AssertionError(f"the queue was still not empty after {MAX_JOBS_PER_DRAIN} jobs")


def version_row(runtime: Runtime, document_id: str, number: int = 1) -> DocumentVersion:
    with runtime.clinical.read_session() as session:
        version = repository.version(session, uuid.UUID(document_id), number)
        assert version is not None
        return version


def job_count(runtime: Runtime, kind: str | None = None) -> int:
    """Rows in the job table (of one kind), whatever their state."""
    query = select(func.count()).select_from(Job)
    if kind is not None:
        query = query.where(Job.kind == kind)
    with runtime.clinical.read_session() as session:
        return session.scalar(query) or 0


def scan_job(runtime: Runtime, version_id: uuid.UUID) -> Job:
    with runtime.clinical.read_session() as session:
        return session.scalars(
            select(Job).where(Job.dedupe_key == kinds.scan_key(version_id))
        ).one()


@contextmanager
def content_world(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory, content: bytes
) -> Iterator[World]:
    """``content`` uploaded over REST (not yet scanned), with a reader for every route.

    The signed link is issued now, before any verdict, as a link shared while a scan is
    pending would be.
    """
    # Every /fhir answer, refusals included, must parse as a FHIR R4 resource.
    client.event_hooks["response"] = [validate_response]
    with build_world(app, runtime, client, make_user, content) as world:
        yield world


def attempts(route: str) -> list[dict[str, str]]:
    """The requests tried on a route: plain, a range, and every form the face offers."""
    tries: list[dict[str, str]] = [{}, {"Range": "bytes=0-9"}]
    if route.startswith("fhir"):
        tries += [{"Accept": "application/pdf"}, {"Accept": "application/fhir+json"}]
    if ROUTES[route][0] == "portal":
        tries.append({"Accept": "application/json"})  # what the portal's own scripts send
    return tries


def assert_refused(response: httpx.Response, problem: type[Problem], where: str) -> None:
    """``response`` is ``problem`` in its face's dialect, and carries none of the content."""
    assert response.status_code == problem.status, (where, response.text[:300])
    assert EICAR not in response.content, where
    kind = response.headers["content-type"].split(";")[0]
    if kind == "application/fhir+json":
        (issue,) = response.json()["issue"]
        coding = issue["details"]["coding"][0]
        assert (coding["system"], coding["code"]) == (PROBLEM_SYSTEM, problem.slug), where
    elif kind == "application/problem+json":
        assert response.json()["type"] == PROBLEM_TYPE_BASE + problem.slug, where
    else:
        # A browser is shown a page that names the problem.
        assert kind == "text/html", where
        assert problem.title in html.unescape(response.text), where


def assert_every_route_refuses(
    world: World, problem: type[Problem], *, retry_after: str | None = None
) -> None:
    """Every content route, in every form, refuses with ``problem``, each refusal audited."""
    for route in ROUTES:
        caller, path = _caller(world, route)
        action = ROUTES[route][2]
        for headers in attempts(route):
            where = f"{route} {headers}"
            before = len(audit_rows(world.runtime))
            response = caller.get(path, headers=headers)
            assert_refused(response, problem, where)
            assert response.headers.get("retry-after") == retry_after, where
            (event,) = audit_rows(world.runtime)[before:]
            assert (event.action, event.outcome) == (action, "failure"), where
            assert event.resource_id == world.document_id, where
            assert event.details["problem"] == problem.slug, where
            assert event.details["status"] == problem.status, where


def assert_every_route_serves(world: World) -> None:
    """Every content route answers the stored bytes, FHIR Binary in both of its forms."""
    for route in ROUTES:
        caller, path = _caller(world, route)
        response = caller.get(path)
        assert (response.status_code, response.content) == (200, world.content), route
        if route.startswith("fhir"):
            resource = caller.get(path, headers={"Accept": "application/fhir+json"})
            assert resource.status_code == 200, route
            assert base64.b64decode(resource.json()["data"]) == world.content, route
