"""Group commit of reads' audit events, on real SQLite and real PostgreSQL (issue 13).

Concurrent reads share one transaction and one commit, and the fail-closed rule holds
per batch: a read returns only once the batch holding its event committed, and a
failed batch fails every read in it with a 503 and leaves none of their events.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.db.engine import Database
from medvault.db.group_commit import GroupCommit, GroupCommitFailed
from medvault.kit.problems import ServiceUnavailable
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_multipart

POISON = "test.poison"
READERS = 24


def _context() -> AuditContext:
    return AuditContext(
        actor_id="user:test",
        actor_role="clinician",
        client_ip=None,
        user_agent=None,
        request_id=None,
    )


def _event(action: str, marker: str) -> AuditEvent:
    return audit.build(context=_context(), action=action, resource_id=marker)


def _stored(database: Database, marker: str) -> int:
    with database.read_session() as session:
        query = select(func.count()).select_from(AuditEvent).where(AuditEvent.resource_id == marker)
        return int(session.execute(query).scalar_one())


@contextmanager
def _poisoned(database: Database, action: str) -> Iterator[None]:
    """A real database failure: a trigger that aborts inserting one action's events."""
    with database.engine.begin() as conn:
        if database.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON audit_events "
                    f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'poisoned'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON audit_events FOR EACH ROW "
                    f"WHEN (NEW.action = '{action}') EXECUTE FUNCTION poison()"
                )
            )
    try:
        yield
    finally:
        with database.engine.begin() as conn:
            conn.execute(
                text("DROP TRIGGER poison" + ("" if database.is_sqlite else " ON audit_events"))
            )
            if not database.is_sqlite:
                conn.execute(text("DROP FUNCTION poison()"))


@contextmanager
def _held(group: GroupCommit) -> Iterator[None]:
    """Make every caller queue, as they do while a slow commit is running, then let the
    first of them lead one batch holding all of them."""
    with group._changed:
        group._leading = True
    try:
        yield
    finally:
        with group._changed:
            group._leading = False
            group._changed.notify_all()


def _count_commits(database: Database) -> list[int]:
    commits = [0]

    def on_commit(_connection: Any) -> None:
        commits[0] += 1

    event.listen(database.engine, "commit", on_commit)
    return commits


def test_concurrent_reads_share_commits_and_all_are_durable(runtime: Runtime) -> None:
    database = runtime.clinical
    group = database.group_commit
    marker = uuid.uuid4().hex
    commits = _count_commits(database)
    batches_before = group.batches
    start = threading.Barrier(READERS)

    def read(_: int) -> None:
        start.wait()
        audit.record_read(database, _event("document.read", marker))

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        list(pool.map(read, range(READERS)))
    assert _stored(database, marker) == READERS
    batches = group.batches - batches_before
    # Every reader returned only after its batch committed; they shared commits.
    assert 1 <= batches < READERS
    assert commits[0] == batches


def test_a_lone_read_commits_at_once(runtime: Runtime) -> None:
    marker = uuid.uuid4().hex
    audit.record_read(runtime.clinical, _event("document.read", marker))
    assert _stored(runtime.clinical, marker) == 1


def test_a_failed_batch_fails_every_read_in_it_and_keeps_none(runtime: Runtime) -> None:
    database = runtime.clinical
    marker = uuid.uuid4().hex
    actions = [POISON] + ["document.read"] * 7
    outcomes: list[BaseException | None] = [None] * len(actions)
    with _poisoned(database, POISON):
        with _held(database.group_commit):

            def read(index: int) -> None:
                try:
                    audit.record_read(database, _event(actions[index], marker))
                except BaseException as exc:
                    outcomes[index] = exc

            threads = [threading.Thread(target=read, args=(n,)) for n in range(len(actions))]
            for thread in threads:
                thread.start()
            _wait_queued(database.group_commit, len(actions))
        for thread in threads:
            thread.join(timeout=60)
    assert all(isinstance(outcome, ServiceUnavailable) for outcome in outcomes), outcomes
    assert all(isinstance(o.__cause__, GroupCommitFailed) for o in outcomes if o is not None)
    assert _stored(database, marker) == 0
    # The next batch is unaffected.
    audit.record_read(database, _event("document.read", marker))
    assert _stored(database, marker) == 1


def _wait_queued(group: GroupCommit, count: int) -> None:
    for _ in range(600):
        with group._changed:
            if len(group._queue) == count:
                return
        threading.Event().wait(0.05)
    raise AssertionError("the readers never queued")


def test_concurrent_downloads_in_a_failed_batch_all_get_503_and_no_bytes(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    document = upload_multipart(client, patient, pdf_bytes()).json()
    url = f"/api/v1/documents/{document['id']}/content"
    with runtime.clinical.read_session() as session:
        before = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    with _poisoned(runtime.clinical, "document.content.read"), ThreadPoolExecutor(6) as pool:
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
    with _held(group):
        threads = [
            threading.Thread(target=group.commit, args=([_event("document.read", marker)],))
            for _ in range(10)
        ]
        for thread in threads:
            thread.start()
        _wait_queued(group, 10)
    for thread in threads:
        thread.join(timeout=60)
    assert _stored(runtime.clinical, marker) == 10
    assert group.batches == 3  # 4 + 4 + 2
