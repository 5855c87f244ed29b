"""Group commit of reads' audit events, on real SQLite and real PostgreSQL (issue 13).

Concurrent reads share one transaction and one commit, and the fail-closed rule holds
per batch: a read returns only once the batch holding its event committed, and a
failed batch fails every read in it with a 503 and leaves none of their events.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medvault.audit import service as audit
from medvault.audit.models import AuditEvent
from medvault.db.engine import Database
from medvault.db.group_commit import GroupCommit, GroupCommitFailed
from medvault.kit.problems import NotFound, ServiceUnavailable
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_multipart
from tests.support.group_commit import (
    POISON,
    count_commits,
    held,
    poisoned,
    read_event,
    wait_queued,
)

READERS = 24


def _stored(database: Database, marker: str) -> int:
    with database.read_session() as session:
        query = select(func.count()).select_from(AuditEvent).where(AuditEvent.resource_id == marker)
        return int(session.execute(query).scalar_one())


def test_concurrent_reads_share_commits_and_all_are_durable(runtime: Runtime) -> None:
    database = runtime.clinical
    group = database.group_commit
    marker = uuid.uuid4().hex
    commits = count_commits(database)
    batches_before = group.batches
    start = threading.Barrier(READERS)

    def read(_: int) -> None:
        start.wait()
        audit.record_read(database, read_event("document.read", marker))

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        list(pool.map(read, range(READERS)))
    assert _stored(database, marker) == READERS
    batches = group.batches - batches_before
    # Every reader returned only after its batch committed; they shared commits.
    assert 1 <= batches < READERS
    assert commits[0] == batches


def test_a_lone_read_commits_at_once(runtime: Runtime) -> None:
    marker = uuid.uuid4().hex
    audit.record_read(runtime.clinical, read_event("document.read", marker))
    assert _stored(runtime.clinical, marker) == 1


def test_a_failed_batch_fails_every_read_in_it_and_keeps_none(runtime: Runtime) -> None:
    database = runtime.clinical
    marker = uuid.uuid4().hex
    actions = [POISON] + ["document.read"] * 7
    outcomes: list[BaseException | None] = [None] * len(actions)
    with poisoned(database, POISON):
        with held(database.group_commit):

            def read(index: int) -> None:
                try:
                    audit.record_read(database, read_event(actions[index], marker))
                except BaseException as exc:
                    outcomes[index] = exc

            threads = [threading.Thread(target=read, args=(n,)) for n in range(len(actions))]
            for thread in threads:
                thread.start()
            wait_queued(database.group_commit, len(actions))
        for thread in threads:
            thread.join(timeout=60)
    assert all(isinstance(outcome, ServiceUnavailable) for outcome in outcomes), outcomes
    assert all(isinstance(o.__cause__, GroupCommitFailed) for o in outcomes if o is not None)
    assert _stored(database, marker) == 0
    # The next batch is unaffected.
    audit.record_read(database, read_event("document.read", marker))
    assert _stored(database, marker) == 1


def test_concurrent_downloads_in_a_failed_batch_all_get_503_and_no_bytes(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    document = upload_multipart(client, patient, pdf_bytes()).json()
    url = f"/api/v1/documents/{document['id']}/content"
    with runtime.clinical.read_session() as session:
        before = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    with poisoned(runtime.clinical, "document.content.read"), ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: client.get(url), range(12)))
    for response in responses:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:medvault:problem:service-unavailable"
        assert b"%PDF" not in response.content
    with runtime.clinical.read_session() as session:
        reads = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "document.content.read")
        ).scalar_one()
        after = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    assert reads == 0
    assert after == before
    assert client.get(url).status_code == 200


def test_a_batch_larger_than_the_cap_is_split(runtime: Runtime) -> None:
    group = GroupCommit(runtime.clinical, max_rows=4)
    marker = uuid.uuid4().hex
    with held(group):
        threads = [
            threading.Thread(target=group.commit, args=([read_event("document.read", marker)],))
            for _ in range(10)
        ]
        for thread in threads:
            thread.start()
        wait_queued(group, 10)
    for thread in threads:
        thread.join(timeout=60)
    assert _stored(runtime.clinical, marker) == 10
    assert group.batches == 3  # 4 + 4 + 2


def _units_in_one_batch(
    group: GroupCommit, works: list[Callable[[Session], object]]
) -> list[BaseException | None]:
    """Run ``works`` as units of one batch (ordered by position); each one's outcome."""
    outcomes: list[BaseException | None] = [None] * len(works)

    def run(index: int) -> None:
        try:
            group.run(works[index], order=f"{index:04d}")
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(works))]
    with held(group):
        for thread in threads:
            thread.start()
        wait_queued(group, len(works))
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def _adds(marker: str) -> Callable[[Session], object]:
    def work(session: Session) -> None:
        session.add(read_event("document.create", marker))
        session.flush()

    return work


def test_a_refused_unit_rolls_back_alone_and_its_neighbours_commit(runtime: Runtime) -> None:
    group = GroupCommit(runtime.clinical)
    marker = uuid.uuid4().hex

    def refuses(session: Session) -> None:
        _adds(marker)(session)  # written, then refused: its savepoint takes it back
        raise NotFound("no such patient")

    outcomes = _units_in_one_batch(group, [_adds(marker), refuses, _adds(marker)])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], NotFound)
    assert _stored(runtime.clinical, marker) == 2
    assert group.batches == 1


def test_a_unit_that_rolls_back_the_transaction_fails_the_whole_batch(
    runtime: Runtime,
) -> None:
    """audit.record rolls the session back when its insert fails (fail closed); inside a
    batch that takes every neighbour's work with it, so all of them must hear so."""
    group = GroupCommit(runtime.clinical)
    marker = uuid.uuid4().hex

    def rolls_back(session: Session) -> None:
        session.rollback()
        raise ServiceUnavailable("The action could not be recorded in the audit log.")

    outcomes = _units_in_one_batch(group, [_adds(marker), rolls_back, _adds(marker)])
    assert all(isinstance(outcome, GroupCommitFailed) for outcome in outcomes), outcomes
    assert _stored(runtime.clinical, marker) == 0
    assert group.batches == 0
