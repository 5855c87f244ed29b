"""Helpers for group-commit tests: a poisoned insert, a held leader, commit counting."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.db.engine import Database
from medvault.db.group_commit import GroupCommit

# An audit action whose events the database refuses while ``poisoned`` is active.
POISON = "test.poison"


def read_event(action: str, marker: str) -> AuditEvent:
    context = AuditContext(
        actor_id="user:test",
        actor_role="clinician",
        client_ip=None,
        user_agent=None,
        request_id=None,
    )
    return audit.build(context=context, action=action, resource_id=marker)


@contextmanager
def poisoned(database: Database, action: str) -> Iterator[None]:
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
def held(group: GroupCommit) -> Iterator[None]:
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


def wait_queued(group: GroupCommit, count: int) -> None:
    for _ in range(600):
        with group._changed:
            if len(group._queue) == count:
                return
        threading.Event().wait(0.05)
    raise AssertionError("the callers never queued")


def count_commits(database: Database) -> list[int]:
    commits = [0]

    def on_commit(_connection: Any) -> None:
        commits[0] += 1

    event.listen(database.engine, "commit", on_commit)
    return commits
