"""``audit verify``: an intact log verifies; every kind of tampering is named, at its index.

Each tamper case edits the database directly, as someone with database access but
without the audit signing key would, then runs the verifier both as a service call
and through the CLI (``audit_app``), on both backends.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Executable, delete, select, text, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from medvault.audit import repository
from medvault.audit import service as audit
from medvault.audit.cli import audit_app
from medvault.audit.leaf import encode_event
from medvault.audit.merkle import TreeAppender, leaf_hash
from medvault.audit.models import AuditCheckpoint, AuditEvent, MerkleNode
from medvault.audit.sealer import seal_pending
from medvault.audit.verify import AuditReport, Kind, verify_log
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from tests.cli.server_env import server_env
from tests.support.audit_log import add_events, context, sealed_events
from tests.support.backends import Backend

SIZE = 50  # sealed in batches of 8: checkpoints at 8, 16, ..., 48 and 50


@pytest.fixture
def sealed_log(audit_runtime: Runtime) -> Runtime:
    add_events(audit_runtime, SIZE)
    seal_pending(runtime=audit_runtime, batch_size=8)
    add_events(audit_runtime, 3, first=SIZE)  # waiting for the sealer: not judged
    return audit_runtime


def run_cli(backend: Backend, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        audit_app, ["verify", "--json", *args], env=server_env(backend.settings)
    )
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def assert_named(report: AuditReport, kind: Kind, index: int | None) -> None:
    assert not report.healthy
    assert report.first_bad is not None, report.findings
    assert (report.first_bad.kind, report.first_bad.index) == (kind, index), report.findings


def execute(runtime: Runtime, *statements: Executable) -> None:
    with runtime.clinical.session() as session:
        for statement in statements:
            session.execute(statement)
        session.commit()


def at(leaf: int) -> ColumnElement[bool]:
    return AuditEvent.leaf_index == leaf


def edit_details(rt: Runtime) -> None:
    execute(rt, update(AuditEvent).where(at(17)).values(details={"n": 17, "note": "changed"}))


def edit_actor(rt: Runtime) -> None:
    execute(rt, update(AuditEvent).where(at(3)).values(actor_id="user:someone-else"))


def edit_time_by_a_microsecond(rt: Runtime) -> None:
    (event,) = [e for e in sealed_events(rt) if e.leaf_index == 30]
    later = event.occurred_at + timedelta(microseconds=1)
    execute(rt, update(AuditEvent).where(at(30)).values(occurred_at=later))


def remove_break_glass_reason(rt: Runtime) -> None:
    event = next(e for e in sealed_events(rt) if e.break_glass_reason and (e.leaf_index or 0) > 30)
    assert event.leaf_index is not None
    execute(rt, update(AuditEvent).where(at(event.leaf_index)).values(break_glass_reason=None))


def renumber_row(rt: Runtime) -> None:
    execute(rt, update(AuditEvent).where(at(9)).values(id=99_999))


def delete_row(rt: Runtime) -> None:
    execute(rt, delete(AuditEvent).where(at(22)))


def swap_rows(rt: Runtime) -> None:
    execute(
        rt,
        update(AuditEvent).where(at(5)).values(leaf_index=-1),
        update(AuditEvent).where(at(40)).values(leaf_index=5),
        update(AuditEvent).where(at(-1)).values(leaf_index=40),
    )


def forged_row(leaf: int, *, with_node: bool = False) -> Callable[[Runtime], None]:
    def insert(rt: Runtime) -> None:
        with rt.clinical.session() as session:
            forged = AuditEvent(
                occurred_at=utcnow(),
                actor_id="user:nobody",
                actor_role="admin",
                action="document.read",
                outcome="success",
                details={},
                leaf_index=leaf,
            )
            session.add(forged)
            session.flush()
            if with_node:
                session.add(MerkleNode(level=0, index=leaf, hash=leaf_hash(encode_event(forged))))
            session.commit()

    return insert


def rewrite_node(rt: Runtime) -> None:
    node = (MerkleNode.level == 2) & (MerkleNode.index == 3)
    execute(rt, update(MerkleNode).where(node).values(hash=bytes(32)))


def delete_node(rt: Runtime) -> None:
    execute(rt, delete(MerkleNode).where((MerkleNode.level == 1) & (MerkleNode.index == 4)))


def edit_row_and_its_leaf_node(rt: Runtime) -> None:
    execute(rt, update(AuditEvent).where(at(13)).values(actor_role="admin"))
    (event,) = [e for e in sealed_events(rt) if e.leaf_index == 13]
    node = (MerkleNode.level == 0) & (MerkleNode.index == 13)
    execute(rt, update(MerkleNode).where(node).values(hash=leaf_hash(encode_event(event))))


def edit_row_and_rebuild_every_node(rt: Runtime) -> None:
    execute(rt, update(AuditEvent).where(at(20)).values(outcome="denied"))
    leaves = [leaf_hash(encode_event(event)) for event in sealed_events(rt)]
    nodes = TreeAppender(0, []).append(leaves)
    with rt.clinical.session() as session:
        session.execute(delete(MerkleNode))
        repository.insert_nodes(session, nodes)
        session.commit()


def corrupt_signature(rt: Runtime) -> None:
    bad = AuditCheckpoint.tree_size == 24
    execute(rt, update(AuditCheckpoint).where(bad).values(signature=bytes(64)))


def claim_another_key(rt: Runtime) -> None:
    bad = AuditCheckpoint.tree_size == 40
    execute(rt, update(AuditCheckpoint).where(bad).values(key_id="attacker-key"))


def truncate(rt: Runtime, size: int) -> None:
    """Cut the log back to ``size`` leaves: rows, the nodes covering them, checkpoints."""
    covers_cut = text(
        'DELETE FROM audit_merkle_nodes WHERE ("index" + 1) * (CAST(1 AS BIGINT) << level) > :size'
    ).bindparams(size=size)
    execute(
        rt,
        delete(AuditEvent).where(AuditEvent.leaf_index >= size),
        covers_cut,
        delete(AuditCheckpoint).where(AuditCheckpoint.tree_size > size),
    )


CASES: dict[str, tuple[Callable[[Runtime], None], Kind, int | None]] = {
    "edited details": (edit_details, Kind.EDITED, 17),
    "edited actor": (edit_actor, Kind.EDITED, 3),
    "edited time by 1 us": (edit_time_by_a_microsecond, Kind.EDITED, 30),
    "removed break-glass reason": (remove_break_glass_reason, Kind.EDITED, 38),
    "renumbered id": (renumber_row, Kind.EDITED, 9),
    "deleted row": (delete_row, Kind.DELETED, 22),
    "reordered rows": (swap_rows, Kind.REORDERED, 5),
    "inserted row": (forged_row(SIZE), Kind.INSERTED, SIZE),
    "inserted row far out": (forged_row(1000), Kind.INSERTED, 1000),
    "inserted row with its leaf node": (forged_row(SIZE, with_node=True), Kind.INSERTED, SIZE),
    "rewritten node": (rewrite_node, Kind.NODE, 12),
    "deleted node": (delete_node, Kind.NODE, 8),
    "edited row and leaf node": (edit_row_and_its_leaf_node, Kind.NODE, 12),
    "edited row, every node rebuilt": (edit_row_and_rebuild_every_node, Kind.CHECKPOINT, 16),
    "bad checkpoint signature": (corrupt_signature, Kind.SIGNATURE, None),
    "checkpoint with unknown key": (claim_another_key, Kind.SIGNATURE, None),
    "truncated": (lambda rt: truncate(rt, 32), Kind.TRUNCATED, 32),
}


def test_an_intact_log_verifies(backend: Backend, sealed_log: Runtime) -> None:
    report = verify_log(runtime=sealed_log, batch_size=7)
    assert report.healthy, report.findings
    assert (report.tree_size, report.sealed, report.unsealed) == (SIZE, SIZE, 3)
    assert report.checkpoints == 7  # 8, 16, ..., 48, 50
    assert report.witness_files == 8  # and "latest"
    code, summary = run_cli(backend)
    assert code == 0
    assert summary["healthy"] is True and summary["first_bad_index"] is None
    assert (summary["sealed"], summary["unsealed"]) == (SIZE, 3)


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_named_at_the_first_bad_index(
    case: str, backend: Backend, sealed_log: Runtime
) -> None:
    tamper, kind, index = CASES[case]
    tamper(sealed_log)
    assert_named(verify_log(runtime=sealed_log, batch_size=7), kind, index)
    code, summary = run_cli(backend)
    assert code == 1
    assert summary["healthy"] is False
    assert summary["first_bad_index"] == index
    assert summary["first_bad"]["kind"] == kind.value


def test_human_output_names_the_index(backend: Backend, sealed_log: Runtime) -> None:
    delete_row(sealed_log)
    result = CliRunner().invoke(audit_app, ["verify"], env=server_env(backend.settings))
    assert result.exit_code == 1
    assert "FAILED at leaf index 22 (deleted)" in result.stdout


def test_truncation_needs_the_witness(
    backend: Backend, sealed_log: Runtime, tmp_path: Path
) -> None:
    """Without a witness copy a clean cut is self-consistent: that is what witnesses are for."""
    truncate(sealed_log, 32)
    empty = tmp_path / "no-witness"
    empty.mkdir()
    assert verify_log(runtime=sealed_log, witness_dir=empty).healthy
    code, _ = run_cli(backend, "--witness", str(empty))
    assert code == 0
    code, summary = run_cli(backend)
    assert (code, summary["first_bad_index"]) == (1, 32)


def test_a_rebuilt_log_differs_from_its_witness(
    backend: Backend, sealed_log: Runtime, tmp_path: Path
) -> None:
    """Truncated and re-grown past its old size, with fresh, validly signed checkpoints."""
    witness = sealed_log.settings.witness_dir
    copy = tmp_path / "witness-copy"
    shutil.copytree(witness, copy)
    truncate(sealed_log, 32)
    shutil.rmtree(witness)  # the sealer refuses to grow a log shorter than its witness
    add_events(sealed_log, 20, first=900)
    seal_pending(runtime=sealed_log, batch_size=8)
    assert verify_log(runtime=sealed_log).healthy
    report = verify_log(runtime=sealed_log, witness_dir=copy)
    assert_named(report, Kind.REWRITTEN, 32)
    code, summary = run_cli(backend, "--witness", str(copy))
    assert (code, summary["first_bad_index"]) == (1, 32)


def test_a_late_commit_is_not_tampering(sealed_log: Runtime) -> None:
    """An event with a smaller id than sealed ones gets a later leaf index; that is fine."""
    runtime = sealed_log
    gap, *_ = add_events(runtime, 3, first=700)
    execute(runtime, delete(AuditEvent).where(AuditEvent.id == gap))  # "not committed yet"
    seal_pending(runtime=runtime)
    with runtime.clinical.session() as session:
        session.add(
            AuditEvent(
                id=gap,
                occurred_at=utcnow(),
                actor_id="user:late",
                actor_role="clinician",
                action="document.read",
                outcome="success",
                details={"late": True},
            )
        )
        session.commit()
    report = verify_log(runtime=runtime)
    assert report.healthy, report.findings
    assert (report.unsealed, report.unsealed_late) == (1, 1)
    seal_pending(runtime=runtime)
    assert verify_log(runtime=runtime).healthy
    late = [event for event in sealed_events(runtime) if event.id == gap]
    assert late[0].leaf_index == SIZE + 3 + 2


def test_postgres_late_commit_from_a_concurrent_transaction(
    backend: Backend, sealed_log: Runtime
) -> None:
    if backend.name != "pg-s3":
        pytest.skip("SQLite writers commit in id order")
    runtime = sealed_log
    seal_pending(runtime=runtime)
    with runtime.clinical.session() as slow:
        (early,) = add_events_in(slow)
        # Another request's events commit while this transaction is still open.
        thread = threading.Thread(target=add_events, args=(runtime, 2), kwargs={"first": 800})
        thread.start()
        thread.join()
        seal_pending(runtime=runtime)
        slow.commit()
    report = verify_log(runtime=runtime)
    assert report.healthy and (report.unsealed, report.unsealed_late) == (1, 1)
    seal_pending(runtime=runtime)
    assert verify_log(runtime=runtime).healthy
    with runtime.clinical.read_session() as session:
        top = session.scalar(select(AuditEvent.leaf_index).where(AuditEvent.id == early))
    assert top == report.tree_size


def add_events_in(session: Session) -> list[int]:
    event = audit.record(session=session, context=context(1), action="document.read")
    return [event.id]


def test_cli_refuses_to_invent_an_audit_key(backend: Backend, sealed_log: Runtime) -> None:
    env = server_env(backend.settings)
    sealed_log.settings.audit_key_path.unlink()
    result = CliRunner().invoke(audit_app, ["verify"], env=env)
    assert result.exit_code == 2
    assert "No audit signing key" in result.output
