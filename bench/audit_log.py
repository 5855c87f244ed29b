"""Sealing and verifying the tamper-evident audit log with 1,000,000 events in PostgreSQL.

Creates two fresh databases (``medvault_bench_<random>_clinical`` / ``_auth``),
migrates them with ``medvault.db.migrate``, bulk-loads synthetic audit events with
COPY (all unsealed, as if the sealer had been off), then:

1. **seal**: calls ``seal_pending`` (one batch per call, so every batch is timed)
   until nothing is left; target >= 20,000 events/s overall;
2. **verify**: runs ``python -m medvault.audit.cli verify --json`` as a subprocess,
   exactly as an operator would (process start and imports included), and checks it
   reports a healthy log; target < 60 s. Its peak RSS is recorded too.

The databases and the temp data dir are removed at the end, even on failure.

    .venv/bin/python bench/audit_log.py                     # 1,000,000 events
    .venv/bin/python bench/audit_log.py --events 100000     # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from common import REPO_DIR, machine_info, new_figure, save_figure, write_json
from medvault.audit.sealer import seal_pending
from medvault.config import Settings
from medvault.db import migrate
from medvault.runtime import Runtime, build_runtime

NAME = "audit_log"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
SEAL_TARGET = 20_000.0  # events/s
VERIFY_TARGET = 60.0  # seconds
ACTIONS = ("document.read", "document.content", "document.upload", "patient.read",
           "document.list", "access.denied", "audit.read")  # fmt: skip
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
          "medvault-cli/0.1.0 python-httpx/0.28", "curl/8.5.0")  # fmt: skip


@contextmanager
def bench_databases() -> Iterator[dict[str, str]]:
    """Two fresh databases, dropped afterwards even if the benchmark fails."""
    stem = f"medvault_bench_{secrets.token_hex(4)}"
    names = {
        "clinical": f"{stem}_clinical",
        "auth": f"{stem}_auth",
        "patients": f"{stem}_patients",
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield names
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_events(db: str, count: int) -> float:
    """COPY ``count`` synthetic, unsealed audit events; returns seconds."""
    rng = random.Random(20261123)
    patients = [uuid.uuid4() for _ in range(500)]
    actors = [f"user:{uuid.uuid4()}" for _ in range(200)]
    start_time = datetime.now(UTC) - timedelta(days=30)
    started = time.perf_counter()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY audit_events (occurred_at, actor_id, actor_role, action, resource_type, "
                "resource_id, patient_id, outcome, client_ip, user_agent, request_id, details, "
                "break_glass_reason) FROM STDIN"
            ) as copy,
        ):
            for i in range(count):
                action = rng.choice(ACTIONS)
                denied = action == "access.denied"
                glass = "Unconscious patient in A&E" if rng.random() < 0.002 else None
                details = {"version": rng.randint(1, 5), "size": rng.randint(1_000, 9_999_999),
                           "path": "/api/v1/documents", "note": "synthetic é"}  # fmt: skip
                copy.write_row((
                    start_time + timedelta(microseconds=i * 2_500 + rng.randrange(1000)),
                    rng.choice(actors), "clinician", action, "Document", str(uuid.uuid4()),
                    rng.choice(patients), "denied" if denied else "success",
                    f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                    rng.choice(AGENTS), secrets.token_hex(16), json.dumps(details), glass,
                ))  # fmt: skip
        conn.commit()
        conn.execute("ANALYZE audit_events")
        conn.commit()
    return time.perf_counter() - started


def seal_all(runtime: Runtime, batch_size: int) -> list[tuple[float, int, int]]:
    """Seal everything one batch per call; returns (elapsed s, tree size, batch size)."""
    batches: list[tuple[float, int, int]] = []
    started = time.perf_counter()
    while True:
        result = seal_pending(runtime=runtime, batch_size=batch_size, should_stop=lambda: True)
        if result.sealed == 0:
            return batches
        batches.append((time.perf_counter() - started, result.tree_size, result.sealed))


def run_verify(env: dict[str, str]) -> tuple[float, dict[str, Any], int]:
    """``medvault audit verify --json`` as a subprocess: seconds, report, peak RSS (KiB)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "medvault.audit.cli", "verify", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_DIR,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"verify exited {done.returncode}: {done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")  # fmt: skip
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, json.loads(done.stdout), peak_kib


def plot(batches: list[tuple[float, int, int]], seal_rate: float, verify_s: float) -> Path:
    fig, (ax_seal, ax_verify) = new_figure(2, width=6.0, height=4.2)
    previous = 0.0
    sizes, rates = [], []
    for elapsed, size, sealed in batches:
        sizes.append(size)
        rates.append(sealed / max(elapsed - previous, 1e-9))
        previous = elapsed
    ax_seal.plot(sizes, rates, lw=1, color="#1f77b4", label="per batch")
    ax_seal.axhline(seal_rate, color="#1f77b4", ls="--", lw=1,
                    label=f"overall {seal_rate:,.0f}/s")  # fmt: skip
    ax_seal.axhline(SEAL_TARGET, color="red", ls=":", lw=1, label="target 20,000/s")
    ax_seal.set_xlabel("tree size after the batch (events)")
    ax_seal.set_ylabel("events sealed per second")
    ax_seal.set_ylim(0, max(max(rates, default=0), SEAL_TARGET) * 1.2)
    ax_seal.set_title("seal_pending on PostgreSQL (one transaction per batch)")
    ax_seal.legend(fontsize=8, loc="lower left")
    ax_verify.bar(["audit verify"], [verify_s], color="#2ca02c", width=0.4)
    ax_verify.axhline(VERIFY_TARGET, color="red", ls=":", lw=1, label="target 60 s")
    ax_verify.set_ylabel("seconds (whole CLI process)")
    ax_verify.set_ylim(0, VERIFY_TARGET * 1.2)
    ax_verify.set_title(f"verify {sizes[-1] if sizes else 0:,} events")
    ax_verify.legend(fontsize=8)
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description="Audit log sealing and verification.")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()

    load_before = os.getloadavg()
    with bench_databases() as dbs, tempfile.TemporaryDirectory(prefix="mv-audit-") as tmp:
        env = {key: value for key, value in os.environ.items() if not key.startswith("MEDVAULT_")}
        env.update(
            MEDVAULT_ENV="test",
            MEDVAULT_DATA_DIR=str(Path(tmp) / "data"),
            MEDVAULT_DATABASE_URL=PG_URL.format(db=dbs["clinical"]),
            MEDVAULT_AUTH_DATABASE_URL=PG_URL.format(db=dbs["auth"]),
            MEDVAULT_PATIENT_DATABASE_URL=PG_URL.format(db=dbs["patients"]),
        )
        settings = Settings(
            env="test",
            data_dir=Path(env["MEDVAULT_DATA_DIR"]),
            database_url=env["MEDVAULT_DATABASE_URL"],
            auth_database_url=env["MEDVAULT_AUTH_DATABASE_URL"],
            patient_database_url=env["MEDVAULT_PATIENT_DATABASE_URL"],
        )
        runtime = build_runtime(settings)
        try:
            migrate.upgrade("clinical", runtime.clinical)
            migrate.upgrade("auth", runtime.auth)
            load_s = load_events(dbs["clinical"], args.events)
            print(f"loaded {args.events:,} events with COPY in {load_s:.1f} s")
            started = time.perf_counter()
            batches = seal_all(runtime, args.batch_size)
            seal_s = time.perf_counter() - started
        finally:
            runtime.close()
        sealed = sum(batch[2] for batch in batches)
        seal_rate = sealed / seal_s
        print(f"sealed {sealed:,} events in {seal_s:.1f} s: {seal_rate:,.0f} events/s "
              f"({len(batches)} checkpoints)")  # fmt: skip
        witness_files = len(list((Path(tmp) / "data" / "witness").glob("checkpoint-*.txt")))
        verify_s, report, peak_kib = run_verify(env)
        print(f"audit verify: {verify_s:.1f} s, healthy={report['healthy']}, "
              f"peak RSS {peak_kib / 1024:.0f} MiB")  # fmt: skip
    load_after = os.getloadavg()

    targets = {
        "seal": {
            "value": round(seal_rate),
            "target": ">= 20000 events/s",
            "met": seal_rate >= SEAL_TARGET,
        },
        "verify": {
            "value": round(verify_s, 2),
            "target": "< 60 s",
            "met": verify_s < VERIFY_TARGET and report["healthy"],
        },
    }
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "events": args.events,
            "seal_batch_size": args.batch_size,
            "database": "PostgreSQL 15 on 127.0.0.1, events loaded with COPY, all unsealed",
            "verify": "python -m medvault.audit.cli verify --json (subprocess, wall clock)",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "load_seconds": round(load_s, 2),
        "seal": {
            "events": sealed,
            "seconds": round(seal_s, 2),
            "events_per_second": round(seal_rate),
            "checkpoints": len(batches),
            "witness_files": witness_files,
            "batches": [[round(t, 3), size, n] for t, size, n in batches],
        },
        "verify": {
            "seconds": round(verify_s, 2),
            "events_per_second": round(sealed / verify_s),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "report": report,
        },
        "targets": targets,
    }
    json_path = write_json(NAME, result)
    png_path = plot(batches, seal_rate, verify_s)
    for name, target in targets.items():
        print(f"  target {name:<7} {target['value']:>10} {target['target']:<18} "
              f"{'MET' if target['met'] else 'MISSED'}")  # fmt: skip
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
