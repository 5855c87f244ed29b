"""Writing a search entry's weighted tsvector on PostgreSQL: expression tree or fixed text.

Until commit c0e81fc, ``medvault.search.index._pg_vector`` built a SQLAlchemy
expression per call (``setweight(to_tsvector('<config>'::regconfig, :value), 'A') ||
...`` for title, description, file names and content) and executed
``update(SearchEntry).where(id == ...).values(tsv=<expression>)``. It now executes one
precompiled ``text()`` statement, ``medvault.search.index._SET_VECTOR``, with the same
values as parameters. This measures both, one call at a time, in the same process
against the same row:

* ``old``: the removed code, copied below (``_old_tsvector`` / ``old_pg_vector``);
* ``new``: ``_SET_VECTOR`` executed with its parameters, as ``_pg_vector`` does now.

Setup: two fresh databases (``listing.bench_databases``), migrated by
``build_runtime(..., run_migrations=True)``; one patient, document and version (COPY,
``listing.seed``) and one ``search_entries`` row for it (title "Discharge letter from
cardiology", a file name, empty description and content), committed. Before each call,
untimed, the entry is loaded into a fresh transaction (as in an upload, where it is in
the session); the call itself is timed (``time.process_time`` for this process's CPU,
``time.perf_counter`` for wall time, including the round trip to PostgreSQL); then,
untimed, the transaction is rolled back, so every call updates the same committed row.
After a warm-up, ``--rounds`` rounds of ``--calls`` calls per variant alternate which
variant goes first. Both variants are checked to write the same tsvector.

    .venv/bin/python bench/tsvector_statement.py                 # 5 rounds x 500 calls
    .venv/bin/python bench/tsvector_statement.py --rounds 2 --calls 100   # quick check
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Text, func, literal, literal_column, select, text, update
from sqlalchemy.orm import Session

from common import machine_info, new_figure, save_figure, write_json
from listing import PG_URL, bench_databases, seed
from medvault.config import Settings
from medvault.kit.clock import utcnow
from medvault.runtime import build_runtime
from medvault.search.index import _SET_VECTOR, regconfig
from medvault.search.models import SearchEntry
from medvault.search.terms import words_only

NAME = "tsvector_statement"
VARIANTS = ("old", "new")
TITLE = "Discharge letter from cardiology"
FILENAMES = "2024-03-14_discharge_letter_cardiology.pdf"


# --------------------------------------------------------------------------- the old way
# Copied from src/medvault/search/index.py as of 5e3fcd7 (removed in c0e81fc).


def _old_tsvector(config: str, entry: SearchEntry, content: str) -> ColumnElement[Any]:
    """The weighted tsvector, computed by PostgreSQL from bound parameters."""
    parts = (
        (entry.title, "A"),
        (entry.description, "B"),
        (entry.filenames, "C"),
        (content, "D"),
    )
    pieces: list[ColumnElement[Any]] = [
        func.setweight(
            func.to_tsvector(regconfig(config), literal(words_only(value), Text())),
            literal_column(f"'{weight}'"),
        )
        for value, weight in parts
    ]
    vector = pieces[0]
    for piece in pieces[1:]:
        vector = vector.op("||")(piece)
    return vector


def old_pg_vector(session: Session, config: str, entry: SearchEntry, content: str) -> None:
    vector = _old_tsvector(config, entry, content)
    session.execute(update(SearchEntry).where(SearchEntry.id == entry.id).values(tsv=vector))
    session.expire(entry, ["tsv"])


# --------------------------------------------------------------------------- the new way


def new_pg_vector(session: Session, config: str, entry: SearchEntry, content: str) -> None:
    """What ``medvault.search.index._pg_vector`` does now (with the config passed in)."""
    session.execute(
        _SET_VECTOR,
        {
            "config": config,
            "title": words_only(entry.title),
            "description": words_only(entry.description),
            "filenames": words_only(entry.filenames),
            "content": words_only(content),
            "id": entry.id,
        },
    )
    session.expire(entry, ["tsv"])


WRITERS: dict[str, Callable[[Session, str, SearchEntry, str], None]] = {
    "old": old_pg_vector,
    "new": new_pg_vector,
}


# --------------------------------------------------------------------------- measuring


def _entry(session: Session, entry_id: int) -> SearchEntry:
    """The entry, loaded in a new transaction (untimed: begins it, checks out the
    connection with its pre-ping, and refreshes the attributes the rollback expired)."""
    entry = session.get(SearchEntry, entry_id, populate_existing=True)
    if entry is None:
        raise RuntimeError(f"search entry {entry_id} is gone")
    return entry


def one_call(session: Session, variant: str, config: str, entry_id: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one tsvector write; rolled back afterwards."""
    entry = _entry(session, entry_id)
    writer = WRITERS[variant]
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    writer(session, config, entry, "")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    session.rollback()
    return cpu, wall


def written_vector(session: Session, variant: str, config: str, entry_id: int) -> str:
    """The tsvector a variant writes (read back in its transaction, then rolled back)."""
    entry = _entry(session, entry_id)
    WRITERS[variant](session, config, entry, "")
    vector = session.scalar(
        select(text("tsv::text")).select_from(SearchEntry).where(SearchEntry.id == entry_id)
    )
    session.rollback()
    return str(vector)


def create_entry(session: Session, document_id: uuid.UUID) -> int:
    entry = SearchEntry(
        document_id=document_id,
        version_id=None,
        content_sha256=None,
        title=TITLE,
        description="",
        filenames=FILENAMES,
        indexed_at=utcnow(),
    )
    session.add(entry)
    session.commit()
    return entry.id


# --------------------------------------------------------------------------- output


def plot(summary: dict[str, Any], rounds: list[dict[str, Any]], calls: int) -> Path:
    fig, axes = new_figure(2, width=5.0, height=4.2)
    colors = {"old": "#7f7f7f", "new": "#1f77b4"}
    for ax, metric, label in ((axes[0], "cpu", "client CPU"), (axes[1], "wall", "wall time")):
        medians = [summary[v][f"{metric}_median_ms"] for v in VARIANTS]
        ax.bar(range(len(VARIANTS)), medians, 0.55, color=[colors[v] for v in VARIANTS])
        for x, variant in enumerate(VARIANTS):
            per_round = [r[variant][f"{metric}_median_ms"] for r in rounds]
            ax.scatter(
                [x] * len(per_round),
                per_round,
                s=12,
                color="black",
                zorder=3,
                label="one round's median" if x == 0 else None,
            )
            ax.text(
                x,
                medians[x] / 2,
                f"{medians[x]:.3f} ms",
                ha="center",
                va="center",
                color="white",
                fontsize=9,
                fontweight="bold",
            )
        ratio = summary["ratio_new_old"][f"{metric}_median"]
        ax.set_xticks(
            range(len(VARIANTS)), ["old: expression\nper call", "new: _SET_VECTOR\ntext()"]
        )
        ax.set_ylabel(f"{label} per call (ms), median of all calls")
        ax.set_title(f"{label}: new/old = {ratio:.2f}", fontsize=10)
        top = max(max(r[v][f"{metric}_median_ms"] for r in rounds for v in VARIANTS), *medians)
        ax.set_ylim(0, top * 1.25)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        f"Setting search_entries.tsv on PostgreSQL, "
        f"{len(rounds)} rounds x {calls} calls per variant",
        fontsize=10,
    )
    return save_figure(fig, NAME)


def ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000.0, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500, help="Calls per variant per round")
    parser.add_argument("--warmup", type=int, default=200, help="Untimed calls per variant")
    args = parser.parse_args()

    load_before = os.getloadavg()
    samples: dict[str, dict[str, list[float]]] = {v: {"cpu": [], "wall": []} for v in VARIANTS}
    rounds: list[dict[str, Any]] = []
    with bench_databases() as dbs, tempfile.TemporaryDirectory(prefix="mv-tsv-") as tmp:
        settings = Settings(
            env="test",
            data_dir=Path(tmp) / "data",
            database_url=PG_URL.format(db=dbs["clinical"]),
            auth_database_url=PG_URL.format(db=dbs["auth"]),
        )
        config = settings.search_text_config
        runtime = build_runtime(settings, run_migrations=True)
        try:
            seeded = seed(dbs["clinical"], patients=1, documents=1)
            with runtime.clinical.session() as session:
                document_id = session.scalar(text("SELECT id FROM documents"))
                entry_id = create_entry(session, document_id)
                vectors = {v: written_vector(session, v, config, entry_id) for v in VARIANTS}
                if vectors["old"] != vectors["new"] or not vectors["new"]:
                    raise RuntimeError(f"the variants write different vectors: {vectors}")
                print(f"both write: {vectors['new']}")
                for _ in range(args.warmup):
                    for variant in VARIANTS:
                        one_call(session, variant, config, entry_id)
                for round_no in range(args.rounds):
                    order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
                    this_round: dict[str, Any] = {"round": round_no, "order": list(order)}
                    for variant in order:
                        cpu: list[float] = []
                        wall: list[float] = []
                        for _ in range(args.calls):
                            c, w = one_call(session, variant, config, entry_id)
                            cpu.append(c)
                            wall.append(w)
                        samples[variant]["cpu"].extend(cpu)
                        samples[variant]["wall"].extend(wall)
                        this_round[variant] = {"cpu_median_ms": ms(cpu), "wall_median_ms": ms(wall)}
                    for metric in ("cpu", "wall"):
                        this_round[f"ratio_new_old_{metric}"] = round(
                            this_round["new"][f"{metric}_median_ms"]
                            / this_round["old"][f"{metric}_median_ms"],
                            4,
                        )
                    rounds.append(this_round)
                    print(
                        f"round {round_no}: "
                        + ", ".join(
                            f"{v} cpu {this_round[v]['cpu_median_ms']:.3f} ms "
                            f"wall {this_round[v]['wall_median_ms']:.3f} ms"
                            for v in VARIANTS
                        )
                    )
                row_after = session.execute(
                    text(
                        "SELECT title, description, filenames, tsv::text, indexed_at "
                        "FROM search_entries WHERE id = :id"
                    ),
                    {"id": entry_id},
                ).one()
                session.rollback()
        finally:
            runtime.close()
    load_after = os.getloadavg()
    if row_after.tsv is not None:
        raise RuntimeError("a write was committed: the row's tsv is no longer NULL")

    summary: dict[str, Any] = {
        v: {
            "cpu_median_ms": ms(samples[v]["cpu"]),
            "wall_median_ms": ms(samples[v]["wall"]),
            "cpu_p90_ms": round(statistics.quantiles(samples[v]["cpu"], n=10)[-1] * 1000, 4),
            "wall_p90_ms": round(statistics.quantiles(samples[v]["wall"], n=10)[-1] * 1000, 4),
            "calls": len(samples[v]["cpu"]),
        }
        for v in VARIANTS
    }
    summary["ratio_new_old"] = {
        f"{metric}_median": round(
            summary["new"][f"{metric}_median_ms"] / summary["old"][f"{metric}_median_ms"], 4
        )
        for metric in ("cpu", "wall")
    } | {
        f"{metric}_median_of_round_ratios": round(
            statistics.median(r[f"ratio_new_old_{metric}"] for r in rounds), 4
        )
        for metric in ("cpu", "wall")
    }
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "rounds": args.rounds,
            "calls_per_variant_per_round": args.calls,
            "warmup_calls_per_variant": args.warmup,
            "text_search_config": config,
            "entry": {
                "title": TITLE,
                "description": "",
                "filenames": FILENAMES,
                "content": "",
            },
            "database": "PostgreSQL on 127.0.0.1, fresh databases migrated by build_runtime",
            "timing": "per call: time.process_time (this process's CPU) and "
            "time.perf_counter (wall) around the write only; entry loaded before, "
            "transaction rolled back after, both untimed",
            "documents_seeded_seconds": round(seeded["seconds"], 3),
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "vector": vectors["new"],
        "summary": summary,
        "rounds": rounds,
        "samples_ms": {
            v: {m: [round(s * 1000, 4) for s in samples[v][m]] for m in ("cpu", "wall")}
            for v in VARIANTS
        },
    }
    json_path = write_json(NAME, result)
    png_path = plot(summary, rounds, args.calls)

    ratio = summary["ratio_new_old"]
    print(f"\n{args.rounds} rounds x {args.calls} calls per variant, config {config!r}:")
    for v in VARIANTS:
        print(
            f"  {v:4} CPU median {summary[v]['cpu_median_ms']:.3f} ms   "
            f"wall median {summary[v]['wall_median_ms']:.3f} ms"
        )
    print(
        f"  new/old: CPU {ratio['cpu_median']:.2f} (rounds: "
        f"{ratio['cpu_median_of_round_ratios']:.2f}), wall {ratio['wall_median']:.2f} "
        f"(rounds: {ratio['wall_median_of_round_ratios']:.2f})"
    )
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
