"""Listing latency with 100,000 documents in PostgreSQL: page 1 versus page 1,000.

The vault runs on two fresh PostgreSQL databases (clinical and auth,
``medvault_bench_<random>_clinical`` / ``_auth``), created here and dropped at the
end. Once the server has migrated the schema, 100 patients and 100,000 documents
(one version each) are bulk-loaded with COPY straight into ``patients``,
``documents`` and ``document_versions``. No blobs are written: listing reads only
rows, so the versions point at storage keys that do not exist.

Measured over HTTP with one keep-alive httpx client, one request at a time, after
a warm-up, interleaved so every scenario sees the same conditions:

* ``page_1``: ``GET /api/v1/documents?limit=50``;
* ``page_1000``: the same with the cursor that ends page 999 (rows 49,951-50,000);
* ``patient_page_1`` / ``patient_last_page``: with ``patient_id`` (about 1,000
  documents, so about 20 pages) for the first and the last full page.

A full walk over all 2,000 pages is timed once; it is also how the page-1000
cursor is found. Every list request also writes its audit event and commits, as
in production, so that is part of the latency.

    .venv/bin/python bench/listing.py                      # 100k rows, 200 reps
    .venv/bin/python bench/listing.py --documents 20000 --reps 50   # quick check
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg

from common import (
    PATIENT_SYSTEM,
    VaultServer,
    latency_summary_ms,
    machine_info,
    new_figure,
    save_figure,
    write_json,
)

NAME = "listing"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
P99_TARGET_MS = 25.0
PAGE = 50
DOC_TYPES = ("11502-2", "18842-5", "34117-2", "11506-3", "57133-1")


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


def seed(db: str, *, patients: int, documents: int) -> dict[str, Any]:
    """COPY patients, documents and one version per document; returns timing and ids."""
    now = datetime.now(UTC)
    rng = random.Random(20240611)
    patient_ids = [uuid.uuid4() for _ in range(patients)]
    started = time.perf_counter()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as conn:
        missing = _unfilled_columns(conn)
        if missing:
            raise RuntimeError(f"schema has NOT NULL columns this seeder does not fill: {missing}")
        with conn.cursor() as cur:
            with cur.copy(
                "COPY patients (id, identifier_system, identifier_value, family_name, "
                "given_name, birth_date, created_at) FROM STDIN"
            ) as copy:
                registered = now - timedelta(days=400)
                for i, pid in enumerate(patient_ids):
                    copy.write_row((pid, PATIENT_SYSTEM, f"bench-{i}-{pid.hex[:8]}", "Bench",
                                    "Synthetic", date(1980, 1, 1), registered))  # fmt: skip
            docs: list[tuple[uuid.UUID, uuid.UUID, datetime, str]] = []
            for i in range(documents):
                # About one document a minute going back in time, with jitter, so the
                # (created_at, id) order is realistic rather than a perfect sequence.
                created = now - timedelta(minutes=i, microseconds=rng.randrange(60_000_000))
                docs.append((uuid.uuid4(), rng.choice(patient_ids), created,
                             rng.choice(DOC_TYPES)))  # fmt: skip
            with cur.copy(
                "COPY documents (id, patient_id, document_type, title, description, "
                "classification, status, current_version, created_at, updated_at, created_by) "
                "FROM STDIN"
            ) as copy:
                for doc_id, pid, created, doc_type in docs:
                    copy.write_row((doc_id, pid, doc_type, "Discharge summary", None, "normal",
                                    "current", 1, created, created, "bench"))  # fmt: skip
            with cur.copy(
                "COPY document_versions (id, document_id, version, filename, "
                "original_filename, content_type, size, sha256, storage_key, kek_id, "
                "wrapped_dek, state, created_at, created_by) FROM STDIN"
            ) as copy:
                for doc_id, _pid, created, _type in docs:
                    vid = uuid.uuid4()
                    copy.write_row((vid, doc_id, 1, "scan.pdf", "scan.pdf", "application/pdf",
                                    10240, secrets.token_hex(32), f"bench/{vid}", "bench-kek",
                                    os.urandom(60), "available", created, "bench"))  # fmt: skip
        conn.commit()
        conn.execute("ANALYZE patients")
        conn.execute("ANALYZE documents")
        conn.execute("ANALYZE document_versions")
        conn.commit()
    seconds = time.perf_counter() - started
    counts = Counter(str(pid) for _doc, pid, _created, _type in docs)
    return {"seconds": seconds, "patient_ids": [str(p) for p in patient_ids], "counts": counts}


def _unfilled_columns(conn: psycopg.Connection[Any]) -> list[str]:
    """NOT NULL columns without a default that the COPY statements above leave out."""
    filled = {
        "patients": {"id", "identifier_system", "identifier_value", "family_name",
                     "given_name", "birth_date", "created_at"},
        "documents": {"id", "patient_id", "document_type", "title", "description",
                      "classification", "status", "current_version", "created_at",
                      "updated_at", "created_by"},
        "document_versions": {"id", "document_id", "version", "filename", "original_filename",
                              "content_type", "size", "sha256", "storage_key", "kek_id",
                              "wrapped_dek", "state", "created_at", "created_by"},
    }  # fmt: skip
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = ANY(%s) "
        "AND is_nullable = 'NO' AND column_default IS NULL",
        (list(filled),),
    ).fetchall()
    return [f"{t}.{c}" for t, c in rows if c not in filled[t]]


def get_page(client: httpx.Client, params: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = client.get("/api/v1/documents", params=params)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"list failed: {response.status_code} {response.text[:300]}")
    return elapsed, response.json()


def walk(client: httpx.Client, params: dict[str, str]) -> dict[str, Any]:
    """Follow next_cursor to the end; keeps every page's latency and cursor."""
    cursors: list[str | None] = [None]  # cursors[i] fetches page i + 1
    latencies: list[float] = []
    seen: set[str] = set()
    duplicates = 0
    started = time.perf_counter()
    while True:
        query = dict(params)
        if cursors[-1] is not None:
            query["cursor"] = cursors[-1]
        elapsed, page = get_page(client, query)
        latencies.append(elapsed)
        for item in page["items"]:
            duplicates += item["id"] in seen
            seen.add(item["id"])
        if not page["next_cursor"]:
            break
        cursors.append(page["next_cursor"])
    return {
        "seconds": time.perf_counter() - started,
        "pages": len(latencies),
        "rows": len(seen),
        "duplicates": duplicates,
        "latencies": latencies,
        "cursors": cursors,
    }


def plot(results: dict[str, list[float]], walk_latencies: list[float], docs: int) -> Any:
    fig, (ax_box, ax_walk) = new_figure(2, width=6.2, height=4.4)
    labels = list(results)
    data = [[s * 1000 for s in results[k]] for k in labels]
    ax_box.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2})
    ax_box.set_xticks(range(1, len(labels) + 1), [k.replace("_", "\n") for k in labels],
                      fontsize=8)  # fmt: skip
    summaries = [latency_summary_ms(results[k]) for k in labels]
    for x, s in enumerate(summaries, start=1):
        ax_box.annotate(f"p50 {s['p50_ms']:.1f}\np99 {s['p99_ms']:.1f}\nmax {s['max_ms']:.0f}",
                        (x + 0.3, s["p99_ms"]), fontsize=7, ha="center", va="bottom")  # fmt: skip
    ax_box.axhline(P99_TARGET_MS, color="red", ls=":", lw=1, label="p99 target 25 ms")
    ax_box.set_ylabel("latency (ms); box = p25-p75, whiskers = p1-p99")
    ax_box.set_title(f"GET /api/v1/documents, {docs:,} docs in PostgreSQL")
    ax_box.set_ylim(0, max(P99_TARGET_MS * 1.3, max(s["p99_ms"] for s in summaries) * 1.3))
    ax_box.legend(fontsize=8, loc="upper left")

    pages = range(1, len(walk_latencies) + 1)
    ax_walk.scatter(pages, [s * 1000 for s in walk_latencies], s=2, color="#1f77b4")
    ax_walk.axhline(P99_TARGET_MS, color="red", ls=":", lw=1)
    ax_walk.set_xlabel("page number (limit 50)")
    ax_walk.set_ylabel("latency (ms)")
    ax_walk.set_title("One full walk over next_cursor (keyset: flat in depth)")
    top = sorted(walk_latencies)[int(len(walk_latencies) * 0.995)] * 1000 if walk_latencies else 1
    ax_walk.set_ylim(0, max(P99_TARGET_MS * 1.3, top * 1.2))
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description="Keyset listing latency on PostgreSQL.")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--reps", type=int, default=200, help="Requests per scenario")
    parser.add_argument("--deep-page", type=int, default=1000, help="The deep page to time")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with bench_databases() as dbs:
        env = {
            "MEDVAULT_DATABASE_URL": PG_URL.format(db=dbs["clinical"]),
            "MEDVAULT_AUTH_DATABASE_URL": PG_URL.format(db=dbs["auth"]),
            "MEDVAULT_PATIENT_DATABASE_URL": PG_URL.format(db=dbs["patients"]),
        }
        with VaultServer(extra_env=env) as vault:
            seeded = seed(dbs["clinical"], patients=args.patients, documents=args.documents)
            print(f"seeded {args.documents:,} documents for {args.patients} patients "
                  f"in {seeded['seconds']:.1f} s")  # fmt: skip
            with vault.client(timeout=30.0) as client:
                for _ in range(20):  # warm-up: connections, caches, plans
                    get_page(client, {"limit": str(PAGE)})
                full = walk(client, {"limit": str(PAGE)})
                print(f"full walk: {full['pages']} pages, {full['rows']:,} rows in "
                      f"{full['seconds']:.1f} s")  # fmt: skip
                deep = min(args.deep_page, full["pages"])
                deep_cursor = full["cursors"][deep - 1]
                patient = max(seeded["counts"], key=lambda p: seeded["counts"][p])
                patient_walk = walk(client, {"limit": str(PAGE), "patient_id": patient})
                # The last page that is full (a short final page would flatter the number).
                last_full = seeded["counts"][patient] // PAGE
                patient_cursor = patient_walk["cursors"][max(0, last_full - 1)]

                scenarios: dict[str, dict[str, str]] = {
                    "page_1": {"limit": str(PAGE)},
                    f"page_{deep}": {"limit": str(PAGE), "cursor": str(deep_cursor)},
                    "patient_page_1": {"limit": str(PAGE), "patient_id": patient},
                    f"patient_page_{last_full}": {"limit": str(PAGE), "patient_id": patient,
                                                  "cursor": str(patient_cursor)},
                }  # fmt: skip
                results: dict[str, list[float]] = {name: [] for name in scenarios}
                for _ in range(args.reps):
                    for name, params in scenarios.items():
                        elapsed, page = get_page(client, params)
                        results[name].append(elapsed)
                        if len(page["items"]) != PAGE:
                            raise RuntimeError(f"{name}: {len(page['items'])} items, not {PAGE}")
    load_after = os.getloadavg()

    summaries = {name: latency_summary_ms(values) for name, values in results.items()}
    targets = {
        name: {"p99_ms": summaries[name]["p99_ms"], "target": "< 25 ms",
               "met": summaries[name]["p99_ms"] < P99_TARGET_MS}
        for name in ("page_1", f"page_{deep}")
    }  # fmt: skip
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "documents": args.documents,
            "patients": args.patients,
            "page_size": PAGE,
            "reps_per_scenario": args.reps,
            "database": "PostgreSQL 15 on 127.0.0.1 (clinical + auth), seeded with COPY",
            "client": "httpx.Client, one keep-alive connection, sequential requests",
            "blobs": "none: listing reads rows only",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "seed_seconds": round(seeded["seconds"], 2),
        "full_walk": {
            "pages": full["pages"],
            "rows": full["rows"],
            "duplicate_rows": full["duplicates"],
            "seconds": round(full["seconds"], 2),
            "per_page": latency_summary_ms(full["latencies"]),
        },
        "patient_filter": {
            "patient_documents": seeded["counts"][patient],
            "pages": patient_walk["pages"],
            "walk_seconds": round(patient_walk["seconds"], 3),
        },
        "latency": summaries,
        "targets": targets,
    }
    json_path = write_json(NAME, result)
    png_path = plot(results, full["latencies"], args.documents)

    print(f"\n{args.documents:,} documents, {args.reps} requests per scenario:")
    for name, s in summaries.items():
        print(f"  {name:<20} p50 {s['p50_ms']:6.2f} ms  p95 {s['p95_ms']:6.2f} ms  "
              f"p99 {s['p99_ms']:6.2f} ms  max {s['max_ms']:6.2f} ms")  # fmt: skip
    print(f"  full walk {full['pages']} pages in {full['seconds']:.1f} s "
          f"(per page p50 {result['full_walk']['per_page']['p50_ms']:.2f} ms)")  # fmt: skip
    for name, t in targets.items():
        print(f"  target p99 {name:<10} {t['p99_ms']:6.2f} ms < 25 ms  "
              f"{'MET' if t['met'] else 'MISSED'}")  # fmt: skip
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
