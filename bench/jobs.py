"""Job queue throughput: enqueue, then claim + complete, on SQLite and on PostgreSQL.

For each backend the script creates a fresh database (a temp SQLite file in WAL mode
with ``synchronous=FULL``, or ``medvault_bench_<random>_jobs`` on 127.0.0.1:5432,
dropped at the end even on failure), migrates it with ``medvault.db.migrate`` so the
``jobs`` table has its real indexes, and opens it through ``medvault.db.engine.Database``
(the vault's SQLite tuning and writer gate). Each repeat, for 1 and then 2 threads:

1. **enqueue** ``--jobs`` no-op jobs with ``queue.enqueue``, ``--batch`` per commit;
   baseline **bare insert**: the same rows as single-row Core INSERTs into a plain
   table of the same shape, committed in the same batches.
2. **drain** them with that many ``Worker`` threads (the real claim, heartbeat thread,
   complete and observer path; the handler does nothing) until every job is done;
   baselines on the same database and thread count:
   * **bare claim/complete**: the two transactions a lease needs, in plain SQL
     (select the oldest ready row, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, mark it
     running, commit; mark it done, commit);
   * **INSERT+UPDATE+COMMIT**: one single-row insert, an update of it and a commit,
     the floor for one durable write per job.

The tables are emptied (untimed) between steps. Rates are medians over the repeats.

    .venv/bin/python bench/jobs.py                          # 1,000 jobs, 5 repeats
    .venv/bin/python bench/jobs.py --jobs 300 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec

import psycopg
from sqlalchemy import (
    Column,
    Index,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy import update as sql_update

from common import machine_info, median, new_figure, save_figure, write_json
from medvault.db import migrate
from medvault.db.engine import Database
from medvault.db.types import UTCDateTime
from medvault.kit.clock import utcnow
from medvault.processing import queue
from medvault.processing.models import Job
from medvault.processing.worker import JobKind, JobRegistry, Worker

NAME = "jobs"
KIND = "bench-noop"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
THREADS = (1, 2)
P = ParamSpec("P")
DRAIN_TIMEOUT_S = 600.0

# The baseline table: the queue's columns that matter for a claim, and its claim index.
_meta = MetaData()
BARE = Table(
    "bench_bare_jobs",
    _meta,
    Column("id", Uuid, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_bench_bare_claim", "state", "created_at"),
)


@contextmanager
def open_database(backend: str) -> Iterator[Database]:
    """A fresh, migrated clinical database; removed afterwards even if the run fails."""
    if backend == "sqlite":
        workdir = Path(tempfile.mkdtemp(prefix="medvault-bench-jobs-"))
        db = Database(f"sqlite:///{workdir / 'clinical.db'}")
        try:
            migrate.upgrade("clinical", db)
            _meta.create_all(db.engine)
            yield db
        finally:
            db.dispose()
            shutil.rmtree(workdir, ignore_errors=True)
        return
    name = f"medvault_bench_{secrets.token_hex(4)}_jobs"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = Database(PG_URL.format(db=name))
        try:
            migrate.upgrade("clinical", db)
            _meta.create_all(db.engine)
            yield db
        finally:
            db.dispose()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(db: Database) -> None:
    with db.session() as session:
        session.execute(delete(Job))
        session.execute(delete(BARE))
        session.commit()


def timed(fn: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - started


def enqueue_jobs(db: Database, count: int, batch: int) -> None:
    for start in range(0, count, batch):
        with db.session() as session:
            for i in range(start, min(start + batch, count)):
                queue.enqueue(session, KIND, {"i": i})
            session.commit()


def bare_insert(db: Database, count: int, batch: int) -> None:
    for start in range(0, count, batch):
        with db.session() as session:
            for i in range(start, min(start + batch, count)):
                now = utcnow()
                session.execute(
                    insert(BARE).values(
                        id=uuid.uuid4(),
                        state="ready",
                        payload=f'{{"i": {i}}}',
                        created_at=now,
                        updated_at=now,
                    )
                )
            session.commit()


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DRAIN_TIMEOUT_S)
        if thread.is_alive():
            raise TimeoutError("a baseline thread did not finish")


def drain_queue(db: Database, count: int, threads: int) -> None:
    """Run ``threads`` real workers until ``count`` jobs are done, then stop them."""
    done = threading.Event()
    lock = threading.Lock()
    finished = [0]

    def observe(kind: str, outcome: str, _seconds: float) -> None:
        # Called by the worker after complete() committed: the job is done for good.
        if outcome != "done":
            raise RuntimeError(f"job ended {outcome}")
        with lock:
            finished[0] += 1
            if finished[0] == count:
                done.set()

    registry = JobRegistry()
    registry.register(JobKind(KIND, lambda job: None))
    workers = [
        Worker(db, registry, owner=f"bench-{i}", poll_interval=0.05, observe=observe)
        for i in range(threads)
    ]
    runners = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for runner in runners:
        runner.start()
    try:
        if not done.wait(DRAIN_TIMEOUT_S):
            raise TimeoutError(f"only {finished[0]} of {count} jobs finished")
    finally:
        for worker in workers:
            worker.stop_event.set()
        for runner in runners:
            runner.join(30)


def bare_claim_complete(db: Database, threads: int) -> None:
    def work(_: int) -> None:
        while True:
            with db.session() as session:
                query = (
                    select(BARE.c.id)
                    .where(BARE.c.state == "ready")
                    .order_by(BARE.c.created_at, BARE.c.id)
                    .limit(1)
                )
                if not db.is_sqlite:
                    query = query.with_for_update(skip_locked=True)
                row_id = session.execute(query).scalar()
                if row_id is None:
                    session.rollback()
                    return
                session.execute(
                    sql_update(BARE)
                    .where(BARE.c.id == row_id)
                    .values(state="running", updated_at=utcnow())
                )
                session.commit()
            with db.session() as session:
                session.execute(
                    sql_update(BARE)
                    .where(BARE.c.id == row_id, BARE.c.state == "running")
                    .values(state="done", updated_at=utcnow())
                )
                session.commit()

    run_threads(threads, work)


def insert_update_commit(db: Database, count: int, threads: int) -> None:
    def work(index: int) -> None:
        for _ in range(index, count, threads):
            row_id, now = uuid.uuid4(), utcnow()
            with db.session() as session:
                session.execute(
                    insert(BARE).values(
                        id=row_id, state="ready", payload="{}", created_at=now, updated_at=now
                    )
                )
                session.execute(
                    sql_update(BARE).where(BARE.c.id == row_id).values(state="done", updated_at=now)
                )
                session.commit()

    run_threads(threads, work)


def count_done(db: Database) -> tuple[int, int]:
    """Done rows in the queue and in the baseline table."""
    with db.read_session() as session:
        jobs = session.scalar(select(func.count()).where(Job.state == "done"))
        bare = session.scalar(select(func.count()).where(BARE.c.state == "done"))
        return int(jobs or 0), int(bare or 0)


def bench_backend(backend: str, jobs: int, batch: int, repeats: int) -> dict[str, list[float]]:
    """Rates (per second) of every step, one value per repeat."""
    rates: dict[str, list[float]] = {}

    def record(step: str, seconds: float) -> None:
        rates.setdefault(step, []).append(jobs / seconds)
        print(f"  {backend:<10} {step:<28} {jobs / seconds:9.1f} /s  ({seconds:.2f} s)")

    with open_database(backend) as db:
        # Warm-up: pools, statement caches, the first pages of every index.
        enqueue_jobs(db, 50, batch)
        drain_queue(db, 50, 1)
        empty_tables(db)
        for repeat in range(1, repeats + 1):
            print(f"{backend} repeat {repeat}/{repeats}")
            for threads in THREADS:
                record(f"enqueue_t{threads}", timed(enqueue_jobs, db, jobs, batch))
                record(f"bare_insert_t{threads}", timed(bare_insert, db, jobs, batch))
                record(f"drain_t{threads}", timed(drain_queue, db, jobs, threads))
                record(f"bare_claim_t{threads}", timed(bare_claim_complete, db, threads))
                if count_done(db) != (jobs, jobs):
                    raise RuntimeError("a drain did not finish every row exactly once")
                empty_tables(db)
                record(f"iuc_t{threads}", timed(insert_update_commit, db, jobs, threads))
                empty_tables(db)
    return rates


def summarize(rates: dict[str, list[float]]) -> dict[str, Any]:
    med = {step: round(median(values), 1) for step, values in rates.items()}
    enqueue = rates["enqueue_t1"] + rates["enqueue_t2"]
    bare = rates["bare_insert_t1"] + rates["bare_insert_t2"]
    out: dict[str, Any] = {
        "enqueue_per_s": round(median(enqueue), 1),
        "bare_insert_per_s": round(median(bare), 1),
        "enqueue_vs_bare_insert": round(median(enqueue) / median(bare), 3),
    }
    for t in THREADS:
        drain, claim, iuc = med[f"drain_t{t}"], med[f"bare_claim_t{t}"], med[f"iuc_t{t}"]
        out[f"drain_{t}_thread"] = {
            "claim_complete_per_s": drain,
            "bare_claim_complete_per_s": claim,
            "insert_update_commit_per_s": iuc,
            "vs_bare_claim_complete": round(drain / claim, 3),
            "vs_insert_update_commit": round(drain / iuc, 3),
            "per_repeat_vs_bare_claim_complete": [
                round(d / c, 3)
                for d, c in zip(rates[f"drain_t{t}"], rates[f"bare_claim_t{t}"], strict=True)
            ],
        }
    out["rates_per_repeat"] = {k: [round(v, 1) for v in vs] for k, vs in rates.items()}
    return out


def plot(results: dict[str, dict[str, Any]]) -> Path:
    fig, axes = new_figure(len(results), width=6.2, height=4.4)
    axes = axes if len(results) > 1 else [axes]
    groups = [
        ("enqueue", [("enqueue", "queue.enqueue"), ("bare_insert", "bare INSERT")]),
        *[
            (
                f"drain, {t} thread{'s' if t > 1 else ''}",
                [
                    (f"drain_t{t}", "Worker claim+complete"),
                    (f"bare_claim_t{t}", "bare claim/complete"),
                    (f"iuc_t{t}", "INSERT+UPDATE+COMMIT"),
                ],
            )
            for t in THREADS
        ],
    ]
    colors = {"queue.enqueue": "#1f77b4", "Worker claim+complete": "#1f77b4",
              "bare INSERT": "#999999", "bare claim/complete": "#999999",
              "INSERT+UPDATE+COMMIT": "#cccccc"}  # fmt: skip
    for ax, (backend, result) in zip(axes, results.items(), strict=True):
        per = result["rates_per_repeat"]
        x = 0.0
        ticks: list[tuple[float, str]] = []
        seen: set[str] = set()
        for title, bars in groups:
            first = x
            for step, label in bars:
                if step in ("enqueue", "bare_insert"):
                    values = per[f"{step}_t1"] + per[f"{step}_t2"]
                else:
                    values = per[step]
                med = median(values)
                ax.bar(x, med, width=0.8, color=colors[label],
                       label=None if label in seen else label)  # fmt: skip
                seen.add(label)
                ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
                ax.annotate(f"{med:.0f}", (x, med), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")  # fmt: skip
                x += 1
            ticks.append(((first + x - 1) / 2, title))
            x += 0.8
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=8)
        # Log scale: enqueueing is ten times faster than draining.
        ax.set_yscale("log")
        ax.set_ylabel("jobs (rows) per second, log scale; bar = median, dots = repeats")
        ax.set_title(f"{backend}: no-op jobs")
        ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="Jobs per step (default 1000)")
    parser.add_argument("--batch", type=int, default=100, help="Enqueues per commit (100)")
    parser.add_argument("--repeats", type=int, default=5, help="Repeats (default 5)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="Comma-separated")
    args = parser.parse_args()

    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for backend in args.backends.split(","):
        results[backend] = summarize(bench_backend(backend, args.jobs, args.batch, args.repeats))
    load_after = os.getloadavg()

    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "jobs_per_step": args.jobs,
            "enqueue_batch": args.batch,
            "repeats": args.repeats,
            "threads": list(THREADS),
            "worker_poll_seconds": 0.05,
            "lease": str(timedelta(seconds=60)),
            "sqlite": "WAL, synchronous=FULL, BEGIN IMMEDIATE behind the writer gate",
            "postgresql": "127.0.0.1:5432, fresh database, server defaults",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "results": results,
    }
    json_path = write_json(NAME, result)
    png_path = plot(results)
    print(f"\n{args.jobs} no-op jobs per step, median of {args.repeats} repeats:")
    for backend, r in results.items():
        print(
            f"  {backend:<10} enqueue {r['enqueue_per_s']:8.1f}/s "
            f"(bare insert {r['bare_insert_per_s']:8.1f}/s, {r['enqueue_vs_bare_insert']:.2f}x)"
        )
        for t in THREADS:
            d = r[f"drain_{t}_thread"]
            print(
                f"  {backend:<10} drain {t} thread(s) {d['claim_complete_per_s']:8.1f}/s  "
                f"bare claim/complete {d['bare_claim_complete_per_s']:8.1f}/s "
                f"({d['vs_bare_claim_complete']:.2f}x)  INSERT+UPDATE+COMMIT "
                f"{d['insert_update_commit_per_s']:8.1f}/s ({d['vs_insert_update_commit']:.2f}x)"
            )
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
