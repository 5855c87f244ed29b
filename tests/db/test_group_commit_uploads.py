"""Group commit of uploads, on real SQLite and real PostgreSQL (issue 13).

Concurrent uploads share one transaction and one commit, each in its own savepoint:
a refusal (a duplicate) reaches only its own caller, and a failed commit fails every
upload in the batch with a 503 and leaves none of their rows.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.models import AuditEvent
from medvault.db.group_commit import GroupCommitFailed
from medvault.documents.models import Document
from medvault.kit.problems import ServiceUnavailable
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.group_commit import (
    POISON,
    count_commits,
    held,
    poisoned,
    read_event,
    wait_queued,
)


def _documents(runtime: Runtime) -> int:
    with runtime.clinical.read_session() as session:
        return int(session.execute(select(func.count()).select_from(Document)).scalar_one())


def _upload_in_one_batch(
    runtime: Runtime,
    uploads: list[Callable[[], httpx.Response]],
    *,
    poison: str | None = None,
) -> list[httpx.Response]:
    """Queue every upload behind a held leader, then let them commit as one batch.

    ``poison`` adds work the database will refuse: ``"read"``, a read's audit event,
    which goes first in the batch; ``"last"``, a unit of work that runs after every
    upload's (its order sorts after any patient id), once their rows are written.
    """
    group = runtime.clinical.group_commit
    queued = len(uploads) + int(poison is not None)

    def poisoned_unit(session: Session) -> None:
        session.add(read_event(POISON, "x"))

    with ThreadPoolExecutor(max_workers=queued) as pool:
        with held(group):
            futures = [pool.submit(upload) for upload in uploads]
            refused: Future[None] | None = None
            if poison == "read":
                refused = pool.submit(audit.record_read, runtime.clinical, read_event(POISON, "x"))
            elif poison == "last":
                refused = pool.submit(group.run, poisoned_unit, order="~")
            wait_queued(group, queued)
        responses = [future.result() for future in futures]
        if refused is not None:
            assert isinstance(refused.exception(), ServiceUnavailable | GroupCommitFailed)
    return responses


def test_concurrent_uploads_share_one_commit_and_all_are_durable(
    client: TestClient, runtime: Runtime
) -> None:
    patients = [create_patient(client) for _ in range(4)]
    contents = [pdf_bytes() for _ in range(8)]
    batches_before = runtime.clinical.group_commit.batches
    commits = count_commits(runtime.clinical)
    responses = _upload_in_one_batch(
        runtime,
        [
            functools.partial(upload_raw, client, patients[n % 4], content)
            for n, content in enumerate(contents)
        ],
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    assert runtime.clinical.group_commit.batches - batches_before == 1
    assert commits[0] == 1
    # Each document is whole: its bytes come back, and its creation was audited.
    for response, content in zip(responses, contents, strict=True):
        document = response.json()
        assert client.get(f"/api/v1/documents/{document['id']}/content").content == content
    with runtime.clinical.read_session() as session:
        created = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "document.create",
                AuditEvent.resource_id.in_([r.json()["id"] for r in responses]),
            )
        ).scalar_one()
    assert created == 8


def test_a_refused_upload_in_a_batch_reaches_only_its_caller(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    existing = pdf_bytes()
    assert upload_raw(client, patient, existing).status_code == 201
    before = _documents(runtime)
    responses = _upload_in_one_batch(
        runtime,
        [
            functools.partial(upload_raw, client, patient, pdf_bytes()),
            # Same bytes as a document the patient has: refused with 409.
            functools.partial(upload_raw, client, patient, existing),
            functools.partial(upload_raw, client, patient, pdf_bytes()),
        ],
    )
    assert [r.status_code for r in responses] == [201, 409, 201]
    assert responses[1].json()["type"] == "urn:medvault:problem:duplicate-document"
    assert _documents(runtime) == before + 2


@pytest.mark.parametrize("poison", ["read", "last"])
def test_a_failed_batch_fails_every_upload_in_it_with_503_and_stores_nothing(
    client: TestClient, runtime: Runtime, poison: str
) -> None:
    patient = create_patient(client)
    before = _documents(runtime)
    blobs_before = {blob.key for blob in runtime.blobs.list_blobs()}
    with poisoned(runtime.clinical, POISON):
        responses = _upload_in_one_batch(
            runtime,
            [functools.partial(upload_raw, client, patient, pdf_bytes()) for _ in range(4)],
            poison=poison,
        )
    for response in responses:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:medvault:problem:service-unavailable"
    assert len(responses) == 4
    assert _documents(runtime) == before
    # The batch failed while writing, before its COMMIT was sent: nothing can have
    # committed, so each upload removed its blob at once (no orphan for the reconciler).
    assert {blob.key for blob in runtime.blobs.list_blobs()} == blobs_before
    with runtime.clinical.read_session() as session:
        created = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "document.create", AuditEvent.patient_id == uuid.UUID(patient)
            )
        ).scalar_one()
    assert created == 0
    # The next upload is unaffected.
    assert upload_raw(client, patient, pdf_bytes()).status_code == 201
