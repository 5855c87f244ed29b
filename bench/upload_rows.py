"""An upload's rows through the SQLAlchemy ORM or through Core statements: what would
Core save?

Issue 13 lists "SQLAlchemy Core (prepared statements) for the hot inserts" as a way to
cut an upload's CPU. Before rewriting four modules' writes, this measures the most it
could save: the same seven rows an upload writes (document, version, three jobs, search
entry, audit event), built by the vault's own code (``processing.queue.enqueue``,
``audit.service.build``, the models), then written either

* ``orm``: as ``documents.upload`` does now: ``session.add`` and two flushes (the
  search entry's, which needs the entry's id, and the audit event's), or
* ``core``: one ``insert()`` per table with the rows' column values as parameters
  (the three jobs as one executemany), the search entry's id by ``RETURNING``.

Each upload is one transaction on a fresh session: timed from the first add (or
statement) to the last flush (or statement), with ``time.process_time`` (this process's
CPU, what the GIL-holding thread spends) and ``time.perf_counter``; then, untimed,
rolled back, so every upload writes into the same tables of the same size. After a
warm-up, ``--rounds`` rounds of ``--uploads`` per variant alternate which variant goes
first, on SQLite (WAL, the vault's own engine and PRAGMAs) and PostgreSQL (fresh
databases, ``listing.bench_databases``). The rows are checked to be written alike.

    .venv/bin/python bench/upload_rows.py                       # 5 rounds x 300 uploads
    .venv/bin/python bench/upload_rows.py --rounds 2 --uploads 50   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import DeclarativeBase, Session

from common import machine_info, new_figure, save_figure, write_json
from listing import PG_URL, bench_databases
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.config import Settings
from medvault.documents.models import Document, DocumentVersion
from medvault.kit.clock import utcnow
from medvault.patients.models import Patient, PatientRef
from medvault.processing import kinds, queue
from medvault.processing.models import Job
from medvault.runtime import Runtime, build_runtime
from medvault.search.models import SearchEntry

NAME = "upload_rows"
VARIANTS = ("orm", "core")
CONTEXT = AuditContext(
    actor_id="api_token:bench",
    actor_role="clinician",
    client_ip="127.0.0.1",
    user_agent="bench",
    request_id="bench",
)


def _rows(patient_id: uuid.UUID) -> dict[str, Any]:
    """One upload's objects, as the vault builds them (not yet in a session)."""
    now = utcnow()
    document = Document(
        id=uuid.uuid4(),
        patient_id=patient_id,
        document_type="11502-2",
        title="scan.pdf",
        description=None,
        classification="normal",
        status="current",
        current_version=1,
        created_at=now,
        updated_at=now,
        created_by=CONTEXT.actor_id,
        origin="clinical",
    )
    version = DocumentVersion(
        id=uuid.uuid4(),
        document_id=document.id,
        version=1,
        filename="scan.pdf",
        original_filename="scan.pdf",
        content_type="application/pdf",
        size=10240,
        sha256=uuid.uuid4().hex * 2,
        sha1=None,
        storage_key=f"versions/{uuid.uuid4()}",
        kek_id="k1",
        wrapped_dek=b"\x00" * 60,
        created_at=now,
        created_by=CONTEXT.actor_id,
        active_content=None,
        scan_state="not_scanned",
    )
    entry = SearchEntry(
        document_id=document.id,
        version_id=version.id,
        content_sha256=None,
        title=document.title,
        description="",
        filenames="scan.pdf",
        indexed_at=now,
    )
    event = audit.build(
        context=CONTEXT,
        action="document.create",
        resource_type="Document",
        resource_id=document.id,
        patient_id=patient_id,
        details={"version": 1, "size": 10240, "content_type": "application/pdf"},
    )
    # Built by the queue's own code in a scratch session, then detached: both variants
    # start from the same finished objects, and only the writing is timed.
    scratch = Session()
    jobs = _jobs(scratch, version.id)
    scratch.expunge_all()
    return {
        "document": document,
        "version": version,
        "jobs": jobs,
        "entry": entry,
        "event": event,
    }


def _jobs(session: Session, version_id: uuid.UUID) -> list[Job]:
    """As ``documents.arrival.arm`` queues them (no clamd configured)."""
    payload = {"version_id": str(version_id)}
    return [
        queue.enqueue(session, kind, payload, dedupe_key=key(version_id), fresh=True)
        for kind, key in (
            (kinds.PREVIEW, kinds.preview_key),
            (kinds.TEXT, kinds.text_key),
            (kinds.FHIR_SHA1, kinds.sha1_key),
        )
    ]


def _values(obj: DeclarativeBase) -> dict[str, Any]:
    """The column values set on ``obj`` (what its INSERT would send)."""
    columns = obj.__table__.columns
    return {c.key: obj.__dict__[c.key] for c in columns if c.key in obj.__dict__}


def write_orm(session: Session, rows: dict[str, Any]) -> None:
    session.add(rows["document"])
    session.add(rows["version"])
    session.add_all(rows["jobs"])
    session.add(rows["entry"])
    session.flush()  # the search entry's id
    session.add(rows["event"])
    session.flush()  # audit.record's


def write_core(session: Session, rows: dict[str, Any]) -> None:
    # The tables, not the mapped classes: insert(Document) would take SQLAlchemy's ORM
    # bulk-insert path, with most of the ORM's bookkeeping.
    session.execute(_table(Document).insert(), [_values(rows["document"])])
    session.execute(_table(DocumentVersion).insert(), [_values(rows["version"])])
    session.execute(_table(Job).insert(), [_values(job) for job in rows["jobs"]])
    entries = _table(SearchEntry)
    session.scalar(entries.insert().values(_values(rows["entry"])).returning(entries.c.id))
    session.execute(_table(AuditEvent).insert(), [_values(rows["event"])])


def _table(model: type[DeclarativeBase]) -> Table:
    return cast(Table, model.__table__)


WRITERS: dict[str, Callable[[Session, dict[str, Any]], None]] = {
    "orm": write_orm,
    "core": write_core,
}


def _patient(runtime: Runtime) -> uuid.UUID:
    with runtime.patients.session() as session:
        patient = Patient(
            id=uuid.uuid4(),
            identifier_system="https://fhir.nhs.uk/Id/nhs-number",
            identifier_value=uuid.uuid4().hex[:10],
            family_name="Bench",
            given_name="Synthetic",
            birth_date=date(1980, 1, 1),
            created_at=utcnow(),
        )
        session.add(patient)
        session.commit()
    with runtime.clinical.session() as session:
        session.add(PatientRef(id=patient.id))
        session.commit()
    return patient.id


def _one(runtime: Runtime, variant: str, patient_id: uuid.UUID) -> tuple[float, float]:
    rows = _rows(patient_id)
    with runtime.clinical.session() as session:
        session.scalar(select(PatientRef.id).where(PatientRef.id == patient_id))  # begin, untimed
        cpu, wall = time.process_time(), time.perf_counter()
        WRITERS[variant](session, rows)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        session.rollback()
    return cpu, wall


def _check_alike(runtime: Runtime, patient_id: uuid.UUID) -> None:
    """Both variants write the same columns: commit one upload each and compare."""
    written = {}
    for variant in VARIANTS:
        rows = _rows(patient_id)
        with runtime.clinical.session() as session:
            WRITERS[variant](session, rows)
            session.commit()
        with runtime.clinical.read_session() as session:
            version = session.get(DocumentVersion, rows["version"].id)
            assert version is not None
            jobs = session.scalars(
                select(Job.kind).where(Job.payload.contains(str(version.id)))
            ).all()
            event = session.scalar(
                select(AuditEvent).where(AuditEvent.resource_id == str(rows["document"].id))
            )
            entry = session.scalar(
                select(SearchEntry).where(SearchEntry.document_id == rows["document"].id)
            )
            assert version is not None and event is not None and entry is not None
            written[variant] = (
                version.size,
                version.scan_state,
                sorted(jobs),
                event.action,
                event.details,
                entry.title,
            )
    assert written["orm"] == written["core"], written


def measure(runtime: Runtime, *, rounds: int, uploads: int) -> dict[str, Any]:
    patient_id = _patient(runtime)
    _check_alike(runtime, patient_id)
    for variant in VARIANTS:  # warm-up: statement caches, connections
        for _ in range(50):
            _one(runtime, variant, patient_id)
    samples: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "wall": []} for v in VARIANTS}
    round_medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for n in range(rounds):
        order = VARIANTS if n % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            cpus = []
            for _ in range(uploads):
                cpu, wall = _one(runtime, variant, patient_id)
                cpus.append(cpu)
                samples[variant]["cpu"].append(cpu)
                samples[variant]["wall"].append(wall)
            round_medians[variant].append(statistics.median(cpus))
    result: dict[str, Any] = {}
    for variant in VARIANTS:
        result[variant] = {
            "median_cpu_ms": round(statistics.median(samples[variant]["cpu"]) * 1000, 3),
            "median_wall_ms": round(statistics.median(samples[variant]["wall"]) * 1000, 3),
            "round_median_cpu_ms": [round(v * 1000, 3) for v in round_medians[variant]],
        }
    ratios = [c / o for c, o in zip(round_medians["core"], round_medians["orm"], strict=True) if o]
    result["core_vs_orm_cpu_ratio"] = round(statistics.median(ratios), 3)
    result["core_vs_orm_cpu_ratio_per_round"] = [round(r, 3) for r in ratios]
    return result


def plot(results: dict[str, dict[str, Any]]) -> Any:
    fig, axes = new_figure(len(results))
    axes = axes if len(results) > 1 else [axes]
    for ax, (backend, result) in zip(axes, results.items(), strict=True):
        cpu = [result[v]["median_cpu_ms"] for v in VARIANTS]
        wall = [result[v]["median_wall_ms"] for v in VARIANTS]
        xs = range(len(VARIANTS))
        ax.bar([x - 0.2 for x in xs], cpu, width=0.4, label="CPU (this process)")
        ax.bar([x + 0.2 for x in xs], wall, width=0.4, label="wall")
        ax.set_xticks(list(xs), VARIANTS)
        ax.set_ylabel("ms per upload's rows (median)")
        ax.set_title(f"{backend}: core/orm CPU = {result['core_vs_orm_cpu_ratio']}x")
        ax.legend()
    fig.suptitle("An upload's seven rows: ORM flushes vs Core inserts")
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runtime = build_runtime(Settings(env="test", data_dir=Path(tmp)), run_migrations=True)
        try:
            results["sqlite"] = measure(runtime, rounds=args.rounds, uploads=args.uploads)
        finally:
            runtime.close()
        with bench_databases() as dbs:
            settings = Settings(
                env="test",
                data_dir=Path(tmp) / "pg",
                database_url=PG_URL.format(db=dbs["clinical"]),
                auth_database_url=PG_URL.format(db=dbs["auth"]),
            )
            runtime = build_runtime(settings, run_migrations=True)
            try:
                results["postgresql"] = measure(runtime, rounds=args.rounds, uploads=args.uploads)
            finally:
                runtime.close()
    for backend, result in results.items():
        print(
            f"{backend:<10} orm {result['orm']['median_cpu_ms']:.3f} ms CPU "
            f"({result['orm']['median_wall_ms']:.3f} wall), core "
            f"{result['core']['median_cpu_ms']:.3f} ms CPU "
            f"({result['core']['median_wall_ms']:.3f} wall): core/orm CPU "
            f"{result['core_vs_orm_cpu_ratio']}, per round "
            f"{result['core_vs_orm_cpu_ratio_per_round']}"
        )
    write_json(
        args.name,
        {
            "benchmark": NAME,
            "machine": machine_info(),
            "config": {"rounds": args.rounds, "uploads_per_round": args.uploads},
            "results": results,
        },
    )
    save_figure(plot(results), args.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
