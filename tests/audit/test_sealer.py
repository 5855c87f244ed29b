"""The sealer: consecutive leaf indexes, correct roots, signed checkpoints, witness files."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, select, text

from medvault.audit import sealer
from medvault.audit.checkpoints import (
    ORIGIN,
    WitnessDirectory,
    parse_signed_note,
    verify_checkpoint,
)
from medvault.audit.leaf import LEAF_FORMAT, encode_event, encode_values, event_leaf_hash
from medvault.audit.models import AuditCheckpoint, AuditEvent
from medvault.audit.repository import SEALER_LOCK_KEY
from medvault.audit.sealer import SealerError, seal_pending, start_sealer
from medvault.audit.verify import verify_log
from medvault.runtime import Runtime, build_runtime
from tests.support.audit_log import add_events, naive_roots, sealed_events
from tests.support.backends import Backend, SettingsFactory


def checkpoints(runtime: Runtime) -> list[AuditCheckpoint]:
    with runtime.clinical.read_session() as session:
        return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size)))


def assert_sealed_consecutively(runtime: Runtime, expected: int) -> None:
    with runtime.clinical.read_session() as session:
        indexes = list(session.scalars(select(AuditEvent.leaf_index)))
    assert None not in indexes
    assert sorted(index or 0 for index in indexes) == list(range(expected))


def test_leaf_encoding_is_canonical_and_covers_every_column() -> None:
    when = datetime(2026, 11, 23, 21, 14, 0, tzinfo=UTC)
    values: list[Any] = [
        7,
        when,
        "user:a",
        "clinician",
        "document.read",
        "Document",
        "r1",
        None,
        "success",
        "10.0.0.1",
        "ua",
        "req",
        {"b": [1, 2.5], "a": "ü"},
        None,
    ]
    encoded = encode_values(values)
    assert (
        encoded
        == (
            '["medvault.audit.v1",7,"2026-11-23T21:14:00.000000Z","user:a","clinician",'
            '"document.read","Document","r1",null,"success","10.0.0.1","ua","req",'
            '{"a":"ü","b":[1,2.5]},null]'
        ).encode()
    )
    assert json.loads(encoded)[0] == LEAF_FORMAT
    # Key order of details does not matter; every column's value does.
    reordered = [*values[:12], {"a": "ü", "b": [1, 2.5]}, None]
    assert encode_values(reordered) == encoded
    for position, changed in enumerate(
        [
            8,
            when.replace(microsecond=1),
            "user:b",
            "admin",
            "x",
            "Patient",
            "r2",
            "00000000-0000-0000-0000-000000000001",
            "denied",
            "10.0.0.2",
            "ub",
            "rq",
            {"b": [1, 2.5], "a": "u"},
            "emergency",
        ]
    ):
        altered = list(values)
        altered[position] = changed
        assert event_leaf_hash(altered) != event_leaf_hash(values), position
    # null and the empty string are different values.
    assert encode_values([*values[:13], ""]) != encoded


def test_sealer_assigns_consecutive_indexes_and_roots_match_a_naive_tree(
    audit_runtime: Runtime,
) -> None:
    runtime = audit_runtime
    assert seal_pending(runtime=runtime) == sealer.SealResult(0, 0, 0)
    add_events(runtime, 37)
    result = seal_pending(runtime=runtime, batch_size=10)
    assert (result.sealed, result.tree_size, result.checkpoints) == (37, 37, 4)
    assert_sealed_consecutively(runtime, 37)
    events = sealed_events(runtime)
    assert [event.id for event in events] == sorted(event.id for event in events)

    add_events(runtime, 5, first=37)
    assert seal_pending(runtime=runtime).tree_size == 42
    roots = naive_roots(runtime)
    stored = checkpoints(runtime)
    assert [c.tree_size for c in stored] == [10, 20, 30, 37, 42]
    public_key = runtime.audit_key.public_key
    for checkpoint in stored:
        assert checkpoint.root_hash == roots[checkpoint.tree_size]
        assert checkpoint.key_id == runtime.audit_key.key_id
        when = checkpoint.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        root = base64.b64encode(checkpoint.root_hash).decode()
        note = f"{ORIGIN}\n{checkpoint.tree_size}\n{root}\n{when}\n"
        assert verify_checkpoint(note, checkpoint.signature, public_key)
        assert not verify_checkpoint(
            note.replace(ORIGIN, "other log"), checkpoint.signature, public_key
        )
    assert verify_log(runtime=runtime).healthy


def test_checkpoints_are_written_to_the_witness_directory(audit_runtime: Runtime) -> None:
    runtime = audit_runtime
    add_events(runtime, 12)
    seal_pending(runtime=runtime, batch_size=5)
    witness = runtime.settings.witness_dir
    assert stat.S_IMODE(witness.stat().st_mode) == 0o700
    assert sorted(p.name for p in witness.iterdir()) == [
        "checkpoint-10.txt",
        "checkpoint-12.txt",
        "checkpoint-5.txt",
        "latest",
    ]
    stored = {c.tree_size: c for c in checkpoints(runtime)}
    for size, path in WitnessDirectory(witness).checkpoint_files():
        text_ = path.read_text("utf-8")
        parsed = parse_signed_note(text_)
        assert parsed.tree_size == size
        assert parsed.root_hash == stored[size].root_hash
        assert parsed.signature == stored[size].signature
        assert parsed.verify(runtime.audit_key.public_key)
        assert text_.startswith(f"{ORIGIN}\n{size}\n") and "\n\n\u2014 " in text_
    assert parse_signed_note((witness / "latest").read_text()).tree_size == 12


def test_a_witness_file_is_never_overwritten(audit_runtime: Runtime) -> None:
    runtime = audit_runtime
    add_events(runtime, 3)
    seal_pending(runtime=runtime)
    witness = WitnessDirectory(runtime.settings.witness_dir)
    (original,) = [parse_signed_note(p.read_text()) for _, p in witness.checkpoint_files()]
    witness.record(original)  # the same checkpoint again is harmless
    with pytest.raises(RuntimeError, match="different checkpoint"):
        witness.record(replace(original, root_hash=bytes(32)))
    assert parse_signed_note(witness.file_for(3).read_text()) == original


def test_sealing_refuses_a_log_that_does_not_match_its_checkpoints(
    audit_runtime: Runtime,
) -> None:
    runtime = audit_runtime
    add_events(runtime, 6)
    seal_pending(runtime=runtime, batch_size=4)
    add_events(runtime, 2, first=6)
    with runtime.clinical.session() as session:
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.tree_size == 6))
        session.commit()
    with pytest.raises(SealerError, match="highest leaf index is 5"):
        seal_pending(runtime=runtime)


def test_sealing_refuses_to_grow_a_log_shorter_than_its_witness(audit_runtime: Runtime) -> None:
    runtime = audit_runtime
    add_events(runtime, 6)
    seal_pending(runtime=runtime, batch_size=4)
    with runtime.clinical.session() as session:
        session.execute(text("DELETE FROM audit_merkle_nodes"))
        session.execute(text("DELETE FROM audit_checkpoints"))
        session.execute(text("UPDATE audit_events SET leaf_index = NULL"))
        session.commit()
    with pytest.raises(SealerError, match=r"witness .* saw size 6"):
        seal_pending(runtime=runtime)


def test_concurrent_writers_while_sealing(audit_runtime: Runtime) -> None:
    runtime = audit_runtime
    writers, per_writer = 4, 30
    done = threading.Event()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(per_writer):
                add_events(runtime, 1, first=n * 1000 + i)
        except BaseException as exc:
            errors.append(exc)

    def seal() -> None:
        try:
            while not done.is_set():
                seal_pending(runtime=runtime, batch_size=7)
        except BaseException as exc:
            errors.append(exc)

    sealing = threading.Thread(target=seal)
    sealing.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sealing.join()
    assert not errors
    seal_pending(runtime=runtime)
    assert_sealed_consecutively(runtime, writers * per_writer)
    report = verify_log(runtime=runtime)
    assert report.healthy, report.findings
    assert (report.sealed, report.unsealed) == (writers * per_writer, 0)


def test_two_sealers_at_once_never_double_assign(audit_runtime: Runtime) -> None:
    """Two vault instances (own engines and pools) sealing the same log together."""
    first = audit_runtime
    second = build_runtime(first.settings)
    try:
        add_events(first, 120)
        barrier = threading.Barrier(2)
        results: list[sealer.SealResult] = []
        errors: list[BaseException] = []

        def run(runtime: Runtime) -> None:
            try:
                barrier.wait()
                for _ in range(30):
                    results.append(seal_pending(runtime=runtime, batch_size=3))
                    add_events(runtime, 1, first=500 + len(results))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(rt,)) for rt in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        last = seal_pending(runtime=first)
        total = 120 + len(results)
        # Every event was sealed by exactly one call of one of the two sealers.
        assert sum(result.sealed for result in results) + last.sealed == total
        assert_sealed_consecutively(first, total)
        sizes = [c.tree_size for c in checkpoints(first)]
        assert sizes == sorted(set(sizes)) and sizes[-1] == total
        report = verify_log(runtime=first)
        assert report.healthy, report.findings
    finally:
        second.close()


def test_postgres_sealer_backs_off_while_another_holds_the_lock(
    backend: Backend, audit_runtime: Runtime
) -> None:
    if backend.name != "pg-s3":
        pytest.skip("SQLite sealers queue on BEGIN IMMEDIATE instead")
    runtime = audit_runtime
    add_events(runtime, 3)
    with runtime.clinical.engine.connect() as other:
        assert other.scalar(text(f"SELECT pg_try_advisory_xact_lock({SEALER_LOCK_KEY})"))
        result = seal_pending(runtime=runtime)
        assert result.busy and result.sealed == 0
        other.rollback()
    assert seal_pending(runtime=runtime).sealed == 3


def test_background_sealer_survives_errors_without_logging_contents(
    make_settings: SettingsFactory,
    audit_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = audit_runtime
    runtime.settings = make_settings(audit_seal_interval_seconds=0.02)
    real = sealer.seal_pending
    calls = 0

    def flaky(**kwargs: Any) -> sealer.SealResult:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError("details: patient Jane Synthetic")
        return real(**kwargs)

    monkeypatch.setattr(sealer, "seal_pending", flaky)
    add_events(runtime, 4)

    async def scenario() -> None:
        handle = start_sealer(runtime)
        for _ in range(1000):  # up to 20 s
            if len(sealed_events(runtime)) == 4:
                break
            await asyncio.sleep(0.02)
        await handle.stop()

    with caplog.at_level(logging.INFO, logger="medvault.audit.sealer"):
        asyncio.run(scenario())
    assert calls >= 3
    assert len(sealed_events(runtime)) == 4
    assert "audit sealing failed (ValueError)" in caplog.text
    assert "Jane" not in caplog.text
    encode_event(sealed_events(runtime)[0])  # rows are still intact and encodable
