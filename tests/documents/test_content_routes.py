"""Every route that serves a version's bytes answers alike, because all go through one
reading use case (``documents.reading``) and one header dependency.

Seven routes, one table of requests: the same statuses, bodies and headers for ranges,
``If-Range`` (fresh and stale) and ``If-None-Match``, and exactly one audit event per
answer, of the same shape. A route that bypassed the service, or parsed its own
headers, would fail a row here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.documents import repository
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_rows
from tests.support.portal import portal_login
from tests.support.users import UserFactory

CONTENT_READ = "document.content.read"
LINK_USE = "document.download_url.use"


@dataclass
class World:
    runtime: Runtime
    api: TestClient  # an API token with every scope
    portal: TestClient  # the patient user, logged in through the portal's form
    anonymous: TestClient  # a signed link is the only credential
    document_id: str
    binary_id: str
    link_path: str
    content: bytes

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.content).hexdigest()}"'


@contextmanager
def content_world(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory, content: bytes
) -> Iterator[World]:
    """``content`` uploaded over REST, a signed link issued now, and a reader per route."""
    patient = create_patient(client)
    uploaded = upload_raw(client, patient, content)
    assert uploaded.status_code == 201, uploaded.text
    document_id = str(uploaded.json()["id"])
    with runtime.clinical.read_session() as session:
        version = repository.version(session, uuid.UUID(document_id), 1)
        assert version is not None
    issued = client.post(f"/api/v1/documents/{document_id}/download-url")
    assert issued.status_code == 201, issued.text
    user = make_user(Role.PATIENT, patient_id=patient)
    with (
        TestClient(app, raise_server_exceptions=False) as portal,
        TestClient(app, raise_server_exceptions=False) as anonymous,
    ):
        assert portal_login(portal, user.username, user.password).status_code == 303
        yield World(
            runtime=runtime,
            api=client,
            portal=portal,
            anonymous=anonymous,
            document_id=document_id,
            binary_id=str(version.id),
            link_path=str(issued.json()["url"]).split("testserver", 1)[1],
            content=content,
        )


@pytest.fixture
def world(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> Iterator[World]:
    content = pdf_bytes(2 * 64 * 1024 + 333)  # three segments
    with content_world(app, runtime, client, make_user, content) as built:
        yield built


# route name -> (which client, the path, the action its audit event names, disposition)
ROUTES = {
    "rest-content": ("api", "/api/v1/documents/{doc}/content", CONTENT_READ, "attachment"),
    "rest-version-content": (
        "api",
        "/api/v1/documents/{doc}/versions/1/content",
        CONTENT_READ,
        "attachment",
    ),
    "fhir-binary": ("api", "/fhir/Binary/{binary}", CONTENT_READ, "attachment"),
    "fhir-binary-vread": ("api", "/fhir/Binary/{binary}/_history/1", CONTENT_READ, "attachment"),
    "portal-download": ("portal", "/documents/{doc}/download", CONTENT_READ, "attachment"),
    "portal-view": ("portal", "/documents/{doc}/view", CONTENT_READ, "inline"),
    "signed-link": ("anonymous", "{link}", LINK_USE, "attachment"),
}


def _caller(world: World, route: str) -> tuple[TestClient, str]:
    who, template, _, _ = ROUTES[route]
    path = template.format(doc=world.document_id, binary=world.binary_id, link=world.link_path)
    clients = {"api": world.api, "portal": world.portal, "anonymous": world.anonymous}
    return clients[who], path


def _requests(world: World) -> list[tuple[str, dict[str, str], int, bytes]]:
    size = len(world.content)
    whole = world.content
    return [
        ("whole", {}, 200, whole),
        ("range", {"Range": "bytes=70000-70009"}, 206, whole[70_000:70_010]),
        ("suffix", {"Range": "bytes=-4"}, 206, whole[-4:]),
        ("if-range fresh", {"Range": "bytes=0-9", "If-Range": world.etag}, 206, whole[:10]),
        ("if-range stale", {"Range": "bytes=0-9", "If-Range": '"stale"'}, 200, whole),
        ("if-none-match", {"If-None-Match": f'"other", W/{world.etag}'}, 304, b""),
        ("if-none-match miss", {"If-None-Match": '"other"'}, 200, whole),
        ("unusable range", {"Range": f"bytes=9-5, {size}-"}, 200, whole),
    ]


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_content_route_answers_and_audits_alike(world: World, route: str) -> None:
    caller, path = _caller(world, route)
    _, _, action, disposition = ROUTES[route]
    for name, headers, status, body in _requests(world):
        before = len(audit_rows(world.runtime))
        response = caller.get(path, headers=headers)

        assert (response.status_code, response.content) == (status, body), name
        assert response.headers["etag"] == world.etag, name
        assert response.headers["accept-ranges"] == "bytes", name
        assert response.headers["cache-control"] == "private, no-store", name
        assert response.headers["content-disposition"].startswith(f"{disposition};"), name
        if status != 304:
            assert response.headers["content-type"] == "application/pdf", name
            assert response.headers["content-length"] == str(len(body)), name
        (event,) = audit_rows(world.runtime)[before:]
        assert event.action == action and event.outcome == "success", name
        assert event.resource_id == world.document_id, name
        assert event.details["version"] == 1, name
        assert event.details["status"] == status, name
        assert event.details["range"] == response.headers.get("content-range"), name


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_content_route_refuses_a_range_past_the_end_alike(world: World, route: str) -> None:
    caller, path = _caller(world, route)
    before = len(audit_rows(world.runtime))
    response = caller.get(path, headers={"Range": f"bytes={len(world.content)}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(world.content)}"
    # Nothing was read, so nothing is recorded as read.
    assert audit_rows(world.runtime)[before:] == []


def test_the_portal_honours_if_range(world: World) -> None:
    """A browser resuming a download with a stale copy gets the whole file, not a piece."""
    path = f"/documents/{world.document_id}/download"
    resumed = world.portal.get(path, headers={"Range": "bytes=100-", "If-Range": world.etag})
    assert resumed.status_code == 206 and resumed.content == world.content[100:]
    stale = world.portal.get(path, headers={"Range": "bytes=100-", "If-Range": '"an old etag"'})
    assert stale.status_code == 200 and stale.content == world.content
