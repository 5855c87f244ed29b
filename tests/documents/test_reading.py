"""The one content-reading use case (``documents.reading``), called as every face calls it.

Against the real filesystem store and SQLite: authorise, resolve, plan and audit, the
event committed (through the database's group commit) before the plan is returned. The
faces themselves are pinned in ``test_content_routes.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.access.denials import Denial
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.documents import reading, repository
from medvault.documents.content import ContentPlan
from medvault.documents.models import DocumentVersion, VersionState
from medvault.kit.problems import (
    Gone,
    IntegrityFailure,
    NotFound,
    RangeNotSatisfiable,
    ServiceUnavailable,
)
from medvault.kit.read_conditions import ByteRange, ReadConditions
from medvault.runtime import Runtime
from medvault.storage.base import BlobStoreError
from medvault.storage.filesystem import FilesystemBlobStore
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_rows

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs"], indirect=True)

SERVICE = Principal(
    kind=PrincipalKind.API_TOKEN,
    subject_id=uuid.uuid4(),
    name="reader",
    role=Role.SERVICE,
    scopes=frozenset({"*"}),
)
CONTEXT = AuditContext.for_principal(
    SERVICE, client_ip="192.0.2.7", user_agent="pytest", request_id="req-reading"
)


@dataclass(frozen=True)
class Stored:
    document_id: uuid.UUID
    patient_id: uuid.UUID
    content: bytes

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.content).hexdigest()}"'


@pytest.fixture
def stored(client: TestClient) -> Stored:
    content = pdf_bytes(3 * 64 * 1024 + 77)  # several segments
    patient = create_patient(client)
    doc = upload_raw(client, patient, content).json()
    return Stored(uuid.UUID(doc["id"]), uuid.UUID(patient), content)


def version_row(runtime: Runtime, stored: Stored) -> DocumentVersion:
    with runtime.clinical.read_session() as session:
        row = repository.version(session, stored.document_id, 1)
    assert row is not None
    return row


def read(
    runtime: Runtime,
    authorise: reading.Authorise,
    conditions: ReadConditions | None = None,
) -> ContentPlan:
    return reading.read_content(
        runtime=runtime,
        context=CONTEXT,
        authorise=authorise,
        conditions=conditions or ReadConditions(),
    )


def body(plan: ContentPlan) -> bytes:
    assert plan.body is not None
    return b"".join(plan.body)


def committed_actions(runtime: Runtime) -> list[str]:
    """Actions on record, read beside a request session that may hold SQLite's write lock."""
    with runtime.clinical.read_session() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_a_full_read_is_planned_and_its_event_committed_before_it_returns(
    runtime: Runtime, stored: Stored
) -> None:
    plan = read(runtime, reading.for_principal(SERVICE, stored.document_id))

    assert plan.status == 200
    assert plan.headers["ETag"] == stored.etag
    assert plan.headers["Content-Length"] == str(len(stored.content))
    assert plan.headers["Content-Disposition"].startswith("attachment;")
    # On record before the caller has streamed a byte.
    assert reading.CONTENT_READ in committed_actions(runtime)
    assert body(plan) == stored.content
    (event,) = audit_rows(runtime, reading.CONTENT_READ)
    assert event.resource_id == str(stored.document_id)
    assert event.patient_id == stored.patient_id
    assert event.actor_id == SERVICE.actor_id and event.request_id == "req-reading"
    assert event.details == {"version": 1, "status": 200, "range": None}


def test_ranges_and_validators_are_honoured(runtime: Runtime, stored: Stored) -> None:
    authorise = reading.for_principal(SERVICE, stored.document_id, 1)
    piece = ByteRange(first=70_000, last=70_009)

    fresh = read(runtime, authorise, ReadConditions(range=piece, if_range=stored.etag))
    assert fresh.status == 206 and body(fresh) == stored.content[70_000:70_010]
    assert fresh.headers["Content-Range"] == f"bytes 70000-70009/{len(stored.content)}"

    stale = read(runtime, authorise, ReadConditions(range=piece, if_range='"old"'))
    assert stale.status == 200 and body(stale) == stored.content

    unchanged = read(runtime, authorise, ReadConditions(if_none_match=(stored.etag,)))
    assert unchanged.status == 304 and unchanged.body is None

    with pytest.raises(RangeNotSatisfiable):
        read(runtime, authorise, ReadConditions(range=ByteRange(10**9, None)))
    statuses = [event.details["status"] for event in audit_rows(runtime, reading.CONTENT_READ)]
    assert statuses == [206, 200, 304]  # one event per answer; a 416 reads nothing


def test_a_document_out_of_reach_is_not_found_and_its_denial_is_carried(
    runtime: Runtime, stored: Stored
) -> None:
    stranger = Principal(
        kind=PrincipalKind.USER,
        subject_id=uuid.uuid4(),
        name="someone else",
        role=Role.PATIENT,
        patient_id=uuid.uuid4(),
    )
    with pytest.raises(NotFound) as refused:
        read(runtime, reading.for_principal(stranger, stored.document_id))
    absent = uuid.uuid4()
    with pytest.raises(NotFound) as missing:
        read(runtime, reading.for_principal(stranger, absent))

    # The same answer for both; the handler audits each denial in its own transaction.
    assert refused.value.detail == missing.value.detail
    assert isinstance(refused.value.denial, Denial) and isinstance(missing.value.denial, Denial)
    assert refused.value.denial.patient_id == stored.patient_id
    assert missing.value.denial.patient_id is None
    assert reading.CONTENT_READ not in committed_actions(runtime)


def test_a_deleted_document_is_gone_and_recorded_as_a_failed_read(
    client: TestClient, runtime: Runtime, stored: Stored
) -> None:
    client.delete(f"/api/v1/documents/{stored.document_id}", params={"reason": "test"})
    with pytest.raises(Gone) as gone:
        read(runtime, reading.for_principal(SERVICE, stored.document_id))
    denial = gone.value.denial
    assert isinstance(denial, Denial)
    assert (denial.action, denial.outcome) == (reading.CONTENT_READ, "failure")


def test_the_lookup_holds_no_write_lock(runtime: Runtime, stored: Stored) -> None:
    """Authorisation runs in a read-only session: on SQLite it takes no writer lock, so
    marking a corrupt version (its own write) never waits on the read that found it."""
    lock_file = Path(f"{runtime.clinical.url.database}.writer-lock")
    free: list[bool] = []
    by_service = reading.for_principal(SERVICE, stored.document_id)

    def authorise(lookup: Session) -> reading.ReadGrant:
        grant = by_service(lookup)
        fd = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free.append(True)
        except BlockingIOError:
            free.append(False)
        finally:
            os.close(fd)
        return grant

    read(runtime, authorise)
    assert free == [True]


def test_a_custom_grant_names_the_event(runtime: Runtime, stored: Stored) -> None:
    """How signed links are audited: their own action, with the link in the details."""
    by_service = reading.for_principal(SERVICE, stored.document_id)

    def by_link(lookup: Session) -> reading.ReadGrant:
        grant = by_service(lookup)
        details = {"link_id": "abc"}
        return reading.ReadGrant(grant.document, grant.version, "document.link.use", details)

    read(runtime, by_link, ReadConditions(range=ByteRange(first=None, last=5)))
    (event,) = audit_rows(runtime, "document.link.use")
    expected_range = f"bytes {len(stored.content) - 5}-{len(stored.content) - 1}"
    assert event.details == {
        "version": 1,
        "status": 206,
        "range": f"{expected_range}/{len(stored.content)}",
        "link_id": "abc",
    }


def test_tampered_bytes_raise_the_integrity_alarm_before_any_answer(
    runtime: Runtime, stored: Stored
) -> None:
    store = runtime.blobs
    assert isinstance(store, FilesystemBlobStore)
    blob = store.path_for(version_row(runtime, stored).storage_key)
    tampered = bytearray(blob.read_bytes())
    tampered[-20] ^= 0x01  # inside the last segment: the whole-file read must catch it
    blob.write_bytes(bytes(tampered))

    with pytest.raises(IntegrityFailure):
        read(runtime, reading.for_principal(SERVICE, stored.document_id))

    assert version_row(runtime, stored).state == VersionState.CORRUPT
    actions = committed_actions(runtime)
    assert "document.version.integrity_failed" in actions
    assert reading.CONTENT_READ not in actions


class _UnreachableStore(FilesystemBlobStore):
    """The store's transport fails: not corruption, just an outage."""

    def read(self, key: str, *, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        raise BlobStoreError("connection reset by peer")


def test_a_store_outage_is_a_503_that_marks_nothing_corrupt(
    runtime: Runtime, stored: Stored
) -> None:
    store = runtime.blobs
    assert isinstance(store, FilesystemBlobStore)
    runtime.blobs = _UnreachableStore(store.root)
    try:
        with pytest.raises(ServiceUnavailable) as outage:
            read(runtime, reading.for_principal(SERVICE, stored.document_id))
    finally:
        runtime.blobs = store
    assert outage.value.headers.get("Retry-After")
    assert version_row(runtime, stored).state == VersionState.AVAILABLE
