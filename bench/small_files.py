"""Many small files: the vault against a naive peer, in the same run, with the same clients.

For each backend (SQLite, PostgreSQL) this starts ``medvault serve`` and the naive peer
(``naive_peer.py``: a bare Starlette app that writes the upload to disk and inserts one
row into the same kind of database, with no auth, encryption, audit or fsync), both on
the same uvicorn settings. Then, for each round and each client (``httpx``, ``wrk``),
it runs against each server in turn:

1. **upload** (``--duration`` s): ``--connections`` concurrent connections, each
   looping a POST of a fresh, unique 10 KB PDF (raw body by default, ``--mode
   multipart`` for forms). On the vault, each connection uploads for its own patient.
2. **download** (same duration): the same connections loop GETs over the ids phase 1
   created, checking every body's length.

The order of the two servers flips every round, so drift and other work on the
machine hit both. Every phase reports requests/s, p50/p95/p99 latency of successful
requests, errors, and the server's CPU time (its whole process tree) per request; the
summary gives each server's median over the rounds and the median of the per-round
ratios vault / peer. Client and server share the machine's cores, so absolute numbers
are a floor for a server with cores of its own; the JSON records how busy each side was.

The vault's job worker is off (``MEDVAULT_EMBEDDED_WORKER=false``) unless
``--embedded-worker``: every upload still enqueues its preview and text jobs, in its own
transaction, but nothing runs them. Running them costs far more CPU than the upload
itself (bench/derive.py measures it), so their backlog would take the CPU of whichever
phase came next, the peer's included.

    .venv/bin/python bench/small_files.py                    # both backends and clients
    .venv/bin/python bench/small_files.py --duration 3 --rounds 1     # smoke run
    .venv/bin/python bench/small_files.py --backend sqlite --client httpx --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from common import (
    VaultServer,
    create_patient,
    machine_info,
    new_figure,
    save_figure,
    synthetic_pdf,
    write_json,
)
from listing import PG_ADMIN, PG_URL, bench_databases
from naive_peer import PeerServer, pg_database
from small_files_clients import Load, Target, run_phase, settle

NAME = "small_files"
DOC_TYPE = "11502-2"
BACKENDS = ("sqlite", "postgres")
CLIENTS = ("httpx", "wrk")
PHASES = ("upload", "download")
SERVERS = ("medvault", "peer")
# Issue 13's targets, drawn on the figure and kept in the JSON; nothing asserts them.
RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0  # at 16 connections
CPU_TARGET_MS = {"upload": 3.0, "download": 2.0}
TARGETS = {
    "requests_per_s_ratio_min": RATIO_TARGET,
    "p99_ms_max_at_16_connections": P99_TARGET_MS,
    "server_cpu_ms_per_request_max": CPU_TARGET_MS,
}
METRICS = ("requests_per_s", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms_per_request")

# Extra server settings for experiments (comma-separated KEY=VALUE), e.g.
# BENCH_SERVER_ENV=MEDVAULT_AUDIT_SEAL_INTERVAL_SECONDS=60; bench/auth_overhead.py uses it.
# Both servers get them, so MEDVAULT_* server options stay the same on both.
EXTRA_ENV = dict(
    item.split("=", 1) for item in os.environ.get("BENCH_SERVER_ENV", "").split(",") if "=" in item
)


@contextlib.contextmanager
def servers(
    backend: str, args: argparse.Namespace
) -> Iterator[tuple[VaultServer, PeerServer, dict[str, list[str]]]]:
    """The vault and the peer on ``backend``, and each one's PostgreSQL databases by
    server name (none on SQLite); fresh databases are dropped afterwards."""
    vault_env = {
        # The per-principal upload limit still runs on every request, but above the load
        # one token can offer here: the benchmark measures the work, not the refusals.
        "MEDVAULT_UPLOAD_RATE_LIMIT": "1000000/minute",
        "MEDVAULT_EMBEDDED_WORKER": "true" if args.embedded_worker else "false",
        "MEDVAULT_SERVER_WORKERS": str(args.server_processes),
    }
    with contextlib.ExitStack() as stack:
        peer_url = None
        databases: dict[str, list[str]] = {}
        if backend == "postgres":
            dbs = stack.enter_context(bench_databases())
            vault_env["MEDVAULT_DATABASE_URL"] = PG_URL.format(db=dbs["clinical"])
            vault_env["MEDVAULT_AUTH_DATABASE_URL"] = PG_URL.format(db=dbs["auth"])
            peer_url = stack.enter_context(pg_database())
            databases = {"medvault": list(dbs.values()), "peer": [peer_url.rsplit("/", 1)[1]]}
        vault = stack.enter_context(VaultServer(extra_env={**vault_env, **EXTRA_ENV}))
        peer = stack.enter_context(
            PeerServer(database_url=peer_url, workers=args.server_processes, extra_env=EXTRA_ENV)
        )
        yield vault, peer, databases


def sessions_opened(databases: list[str]) -> int:
    """Connections ever opened to ``databases`` (pg_stat_database.sessions, PG 14+)."""
    if not databases:
        return 0
    # A backend reports its connection when it flushes its statistics: at the latest
    # when it exits, which is when a pool that is too small closes one.
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        row = admin.execute(
            "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = ANY(%s)",
            (databases,),
        ).fetchone()
    return int(row[0]) if row else 0


def make_targets(vault: VaultServer, peer: PeerServer, connections: int) -> dict[str, Target]:
    with vault.client(timeout=30.0) as http:
        patients = tuple(create_patient(http) for _ in range(connections))
    return {
        "medvault": Target(
            name="medvault",
            base_url=vault.base_url,
            pid=vault.pid,
            token=vault.token,
            upload_path="/api/v1/documents",
            download_path="/api/v1/documents/{id}/content",
            upload_fields=(("document_type", DOC_TYPE),),
            conn_field="patient_id",
            conn_values=patients,
        ),
        "peer": Target(
            name="peer",
            base_url=peer.base_url,
            pid=peer.pid,
            token=None,
            upload_path="/upload",
            download_path="/files/{id}",
        ),
    }


def warm_up(target: Target, size: int) -> None:
    """One upload and one download, so imports, pools and caches are ready."""
    with httpx.Client(base_url=target.base_url, headers=target.headers(), timeout=30.0) as http:
        response = http.post(target.upload_path,
                             params={**target.fields(0), "filename": "warm.pdf"},
                             content=synthetic_pdf(size),
                             headers={"Content-Type": "application/pdf"})  # fmt: skip
        response.raise_for_status()
        http.get(target.download_path.format(id=response.json()["id"])).raise_for_status()


def process_count(pid: int) -> int:
    return 1 + len(psutil.Process(pid).children(recursive=True))


def run_backend(backend: str, args: argparse.Namespace, load: Load) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with servers(backend, args) as (vault, peer, databases):
        targets = make_targets(vault, peer, load.connections)
        for target in targets.values():
            warm_up(target, load.size)
        processes = {name: process_count(t.pid) for name, t in targets.items()}
        pids = [t.pid for t in targets.values()]
        for round_index in range(args.rounds):
            order = SERVERS if round_index % 2 == 0 else SERVERS[::-1]
            for client in args.clients:
                for name in order:
                    target = targets[name]
                    ids: list[str] = []
                    for phase in PHASES:
                        settled = settle(pids)
                        print(f"  {backend:<8} round {round_index + 1}  {client:<5} "
                              f"{name:<8} {phase:<8} ...", flush=True)  # fmt: skip
                        dbs = databases.get(name, [])
                        before = sessions_opened(dbs)
                        result = run_phase(client, target, phase, load, ids)
                        # New database connections during the phase: a pool too small
                        # for the load closes and reopens them (issue 13).
                        opened: int | None = None
                        if dbs:
                            time.sleep(1.0)  # closed backends report as they exit
                            opened = sessions_opened(dbs) - before
                            print(f"    {opened} new database connections", flush=True)
                        runs.append({"backend": backend, "round": round_index, "client": client,
                                     "server": name, "phase": phase, "settled_s": settled,
                                     "db_sessions_opened": opened, **result.summary})  # fmt: skip
                        if phase == "upload":
                            if not result.ids:
                                raise RuntimeError(f"{name} created nothing: {result.summary}")
                            ids = result.ids
                            random.shuffle(ids)
        rss = {name: psutil.Process(t.pid).memory_info().rss for name, t in targets.items()}
    return {
        "runs": runs,
        "server_processes": processes,
        "server_rss_mib_at_end": {k: round(v / 2**20, 1) for k, v in rss.items()},
    }


# --------------------------------------------------------------------------- summary


def metric(run: dict[str, Any], key: str) -> float:
    value = run[key] if key in run else run["latency"][key]
    return math.nan if value is None else float(value)  # None: wrk's JSON null (no 2xx)


def finite_median(values: list[float]) -> float:
    kept = [v for v in values if math.isfinite(v)]
    return statistics.median(kept) if kept else math.nan


def summarise_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend x client x phase: each server's medians, and median per-round ratios."""
    groups: list[dict[str, Any]] = []
    keyed: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        keyed.setdefault((run["backend"], run["client"], run["phase"]), []).append(run)
    for (backend, client, phase), mine in keyed.items():
        by_server = {s: {r["round"]: r for r in mine if r["server"] == s} for s in SERVERS}
        group: dict[str, Any] = {"backend": backend, "client": client, "phase": phase}
        for server, rounds in by_server.items():
            errors: Counter[str] = Counter()
            for one in rounds.values():
                errors.update(one["errors"])
            group[server] = {m: finite_median([metric(r, m) for r in rounds.values()])
                             for m in METRICS} | {"errors": dict(errors),
                                                  "rounds": len(rounds)}  # fmt: skip
        paired = sorted(set(by_server["medvault"]) & set(by_server["peer"]))
        group["ratio_medvault_to_peer"] = {
            m: finite_median([metric(by_server["medvault"][i], m) / metric(by_server["peer"][i], m)
                              for i in paired if metric(by_server["peer"][i], m) > 0])
            for m in METRICS
        }  # fmt: skip
        groups.append(group)
    return groups


def print_table(groups: list[dict[str, Any]]) -> None:
    print(f"\n{'backend':<9}{'client':<7}{'phase':<9}{'server':<9}{'req/s':>8}{'p50':>8}"
          f"{'p95':>8}{'p99':>8}{'cpu ms/req':>11}  errors")  # fmt: skip
    for g in groups:
        label = f"{g['backend']:<9}{g['client']:<7}{g['phase']:<9}"
        for server in (*SERVERS, "ratio"):
            row = g["ratio_medvault_to_peer"] if server == "ratio" else g[server]
            unit = "x" if server == "ratio" else ""
            cells = "".join(f"{row[m]:>{7 if unit else 8}.2f}{unit}" for m in METRICS[:4])
            cpu = row["server_cpu_ms_per_request"]
            errors = "" if server == "ratio" else (row["errors"] or 0)
            print(f"{label}{server:<9}{cells}{cpu:>{10 if unit else 11}.2f}{unit}  {errors}")
            label = " " * 25


def plot(groups: list[dict[str, Any]], args: argparse.Namespace) -> Path:
    fig, axes = new_figure(3, width=5.6, height=4.6)
    labels = [f"{g['backend']}\n{g['client']}\n{g['phase']}" for g in groups]
    xs = range(len(groups))
    colors = {"medvault": "#1f77b4", "peer": "#999999"}
    width = 0.38
    panels = (
        ("requests_per_s", "successful requests / s", "Throughput (label: medvault / peer)"),
        ("p99_ms", "p99 latency (ms, log scale)", "p99 latency"),
        ("server_cpu_ms_per_request", "server CPU ms per request", "Server CPU per request"),
    )
    for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
        for offset, server in ((-width / 2, "medvault"), (width / 2, "peer")):
            ax.bar([x + offset for x in xs], [g[server][key] for g in groups], width,
                   color=colors[server], label=server)  # fmt: skip
        ax.set_xticks(list(xs), labels, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    rate_ax, p99_ax, cpu_ax = axes
    for x, g in zip(xs, groups, strict=True):
        ratio = g["ratio_medvault_to_peer"]["requests_per_s"]
        top = max(g["medvault"]["requests_per_s"], g["peer"]["requests_per_s"])
        rate_ax.annotate(f"{ratio:.2f}x", (x, top), ha="center", va="bottom", fontsize=8)
        cpu_ax.hlines(
            CPU_TARGET_MS[g["phase"]], x - 0.45, x + 0.45, colors="#d62728", linestyles="--", lw=1
        )
    p99_ax.set_yscale("log")
    p99_ax.axhline(P99_TARGET_MS, color="#d62728", ls="--", lw=1)
    rate_ax.set_ylim(top=rate_ax.get_ylim()[1] * 1.1)
    fig.suptitle(f"{args.connections} connections, {args.size_kib} KB PDFs ({args.mode} upload), "
                 f"{args.duration:g} s per phase, medians of {args.rounds} round(s); "
                 "red dashes: targets", fontsize=10)  # fmt: skip
    return save_figure(fig, args.name)


def main() -> int:
    parser = argparse.ArgumentParser(description="Small files: the vault against a naive peer.")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--client", choices=(*CLIENTS, "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds (server order flips)")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds per phase")
    parser.add_argument("--connections", "--clients", type=int, default=16,
                        help="Concurrent connections")  # fmt: skip
    parser.add_argument("--procs", type=int, default=2, help="httpx client processes")
    parser.add_argument("--size-kib", type=int, default=10, help="File size in KiB")
    parser.add_argument("--mode", choices=("raw", "multipart"), default="raw")
    parser.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="Processes of each server (MEDVAULT_SERVER_WORKERS, peer workers)",
    )
    parser.add_argument(
        "--embedded-worker",
        action="store_true",
        help="Let the vault run its preview/text jobs during the run",
    )
    parser.add_argument("--name", default=NAME, help="Output name under bench/results/")
    args = parser.parse_args()
    # SIGTERM (e.g. from `timeout`) would end Python without unwinding, leaving both
    # servers running and the PostgreSQL databases behind; exiting runs the cleanup.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    args.clients = CLIENTS if args.client == "both" else (args.client,)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    load = Load(args.connections, args.duration, args.size_kib * 1024, args.mode, args.procs)

    load_before = os.getloadavg()
    per_backend = {}
    for backend in backends:
        print(f"{backend}: medvault and the naive peer ...", flush=True)
        per_backend[backend] = run_backend(backend, args, load)
    load_after = os.getloadavg()

    runs = [run for data in per_backend.values() for run in data["runs"]]
    groups = summarise_runs(runs)
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "backends": list(backends),
            "clients": list(args.clients),
            "rounds": args.rounds,
            "connections": args.connections,
            "httpx_client_processes": args.procs,
            "wrk": "Debian wrk 4.1, -t = -c, per-request latency timed in bench/wrk/lib.lua",
            "duration_s_per_phase": args.duration,
            "size_bytes": load.size,
            "upload_mode": args.mode,
            "server_processes": args.server_processes,
            "vault_embedded_worker": args.embedded_worker,
            "extra_server_env": EXTRA_ENV,
            "note": "client and server share the machine's cores",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "targets": TARGETS,
        "summary": groups,
        "per_backend": {
            backend: {k: v for k, v in data.items() if k != "runs"}
            for backend, data in per_backend.items()
        },
        "runs": runs,
    }
    json_path = write_json(args.name, result)
    png_path = plot(groups, args)
    print_table(groups)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
