"""Many small files: 16 concurrent clients upload unique 10 KB PDFs, then download them.

Phase 1 (upload, ``--duration`` seconds): every client loops ``POST /api/v1/documents``
with a fresh random 10 KB PDF (raw body by default, ``--mode multipart`` for forms)
for its own patient. Phase 2 (download, same duration): the clients loop ``GET
/api/v1/documents/{id}/content`` over the documents phase 1 created, in a shuffled
order, checking every body's length. Both phases report requests/s over the phase
and p50/p95/p99 latency per request.

The client is httpx on asyncio, split over ``--procs`` processes (default 2, each
running clients/procs concurrent connections) because one Python process cannot
drive the server hard enough by itself. Client and server share the machine's 2
cores, so these numbers are a floor for a server with cores of its own; the JSON
records how much CPU each side used.

    .venv/bin/python bench/small_files.py                 # 30 s per phase
    .venv/bin/python bench/small_files.py --duration 5    # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from common import (
    VaultServer,
    create_patient,
    latency_summary_ms,
    machine_info,
    new_figure,
    percentile,
    save_figure,
    synthetic_pdf,
    write_json,
)

NAME = "small_files"
DOC_TYPE = "11502-2"


@dataclass(frozen=True)
class Job:
    """What one client process does: ``tasks`` concurrent loops until the deadline."""

    phase: str  # "upload" | "download"
    base_url: str
    token: str
    tasks: int
    start_at: float  # wall clock (time.time), shared by every process
    duration: float
    size: int
    mode: str  # "raw" | "multipart"
    targets: list[str]  # patient ids (upload: one per task) or document ids (download)


# One record per request: (seconds since phase start at completion, latency s, outcome, id)
Record = tuple[float, float, str, str]


async def _upload_loop(client: httpx.AsyncClient, job: Job, patient_id: str) -> list[Record]:
    records: list[Record] = []
    deadline = job.start_at + job.duration
    while time.time() < deadline:
        data = synthetic_pdf(job.size)
        started = time.perf_counter()
        try:
            if job.mode == "multipart":
                response = await client.post(
                    "/api/v1/documents",
                    data={"patient_id": patient_id, "document_type": DOC_TYPE},
                    files={"file": ("scan.pdf", data, "application/pdf")},
                )
            else:
                response = await client.post(
                    "/api/v1/documents",
                    params={"patient_id": patient_id, "document_type": DOC_TYPE,
                            "filename": "scan.pdf"},
                    content=data,
                    headers={"Content-Type": "application/pdf"},
                )  # fmt: skip
            latency = time.perf_counter() - started
            ok = response.status_code == 201
            outcome = "ok" if ok else f"http_{response.status_code}"
            doc_id = response.json()["id"] if ok else ""
        except httpx.HTTPError as exc:
            latency, outcome, doc_id = time.perf_counter() - started, type(exc).__name__, ""
        records.append((time.time() - job.start_at, latency, outcome, doc_id))
    return records


async def _download_loop(client: httpx.AsyncClient, job: Job, ids: list[str]) -> list[Record]:
    records: list[Record] = []
    deadline = job.start_at + job.duration
    position = 0
    while time.time() < deadline and ids:
        doc_id = ids[position % len(ids)]
        position += 1
        started = time.perf_counter()
        try:
            response = await client.get(f"/api/v1/documents/{doc_id}/content")
            latency = time.perf_counter() - started
            if response.status_code != 200:
                outcome = f"http_{response.status_code}"
            elif len(response.content) != job.size:
                outcome = "wrong_length"
            else:
                outcome = "ok"
        except httpx.HTTPError as exc:
            latency, outcome = time.perf_counter() - started, type(exc).__name__
        records.append((time.time() - job.start_at, latency, outcome, doc_id))
    return records


async def _run_job(job: Job) -> list[Record]:
    limits = httpx.Limits(max_connections=job.tasks, max_keepalive_connections=job.tasks)
    async with httpx.AsyncClient(
        base_url=job.base_url,
        headers={"Authorization": f"Bearer {job.token}"},
        limits=limits,
        timeout=60.0,
    ) as client:
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        if job.phase == "upload":
            loops = [_upload_loop(client, job, pid) for pid in job.targets]
        else:
            shares = [job.targets[i :: job.tasks] for i in range(job.tasks)]
            loops = [_download_loop(client, job, ids) for ids in shares if ids]
        results = await asyncio.gather(*loops)
    return [record for records in results for record in records]


# Extra server settings for experiments (comma-separated KEY=VALUE), e.g.
# BENCH_SERVER_ENV=MEDVAULT_AUDIT_SEAL_INTERVAL_SECONDS=60; bench/auth_overhead.py uses it.
EXTRA_ENV = dict(
    item.split("=", 1) for item in os.environ.get("BENCH_SERVER_ENV", "").split(",") if "=" in item
)


def run_job(job: Job) -> list[Record]:
    """Entry point of a client process."""
    return asyncio.run(_run_job(job))


def run_phase(
    *, phase: str, vault: VaultServer, args: argparse.Namespace, targets: list[str]
) -> dict[str, Any]:
    """Run one phase across the client processes and summarise it."""
    procs = max(1, min(args.procs, args.clients))
    per_proc = [
        args.clients // procs + (1 if i < args.clients % procs else 0) for i in range(procs)
    ]
    start_at = time.time() + 2.0  # room for every process to start and connect
    jobs: list[Job] = []
    first = 0
    for index, tasks in enumerate(per_proc):
        # Upload: each client its own patient. Download: every process a stripe of ids.
        mine = targets[first : first + tasks] if phase == "upload" else targets[index::procs]
        first += tasks
        jobs.append(Job(phase, vault.base_url, vault.token, tasks, start_at, args.duration,
                        args.size_kib * 1024, args.mode, mine))  # fmt: skip

    server = psutil.Process(vault.pid)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pending = pool.map_async(run_job, jobs)
        time.sleep(max(0.0, start_at - time.time()))
        cpu0 = sum(server.cpu_times()[:2])
        busy0 = _busy()
        wall0 = time.perf_counter()
        parts = pending.get(timeout=args.duration + 600)
        wall = time.perf_counter() - wall0
        server_cpu = sum(server.cpu_times()[:2]) - cpu0
        busy = _busy() - busy0
    records = [r for part in parts for r in part]
    ok = [r for r in records if r[2] == "ok"]
    elapsed = max((r[0] for r in records), default=args.duration)
    return {
        "records": records,
        "summary": {
            "requests": len(records),
            "ok": len(ok),
            "errors": dict(Counter(r[2] for r in records if r[2] != "ok")),
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(len(ok) / elapsed, 1),
            "latency": latency_summary_ms([r[1] for r in ok]),
            "server_cpu_cores": round(server_cpu / wall, 2),
            "machine_busy_cores": round(busy / wall, 2),
            "client_processes": procs,
        },
    }


def _busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def plot(phases: dict[str, dict[str, Any]], args: argparse.Namespace) -> Any:
    fig, (ax_rate, ax_cdf) = new_figure(2, width=6.2, height=4.4)
    colors = {"upload": "#1f77b4", "download": "#d62728"}
    lines: list[str] = []
    for phase, data in phases.items():
        records = data["records"]
        # Whole seconds inside the phase only; requests still running at the deadline
        # finish in a partial last second that would look like a drop.
        seconds = math.floor(args.duration)
        per_second = Counter(int(r[0]) for r in records if r[2] == "ok")
        xs = list(range(seconds))
        overall = data["summary"]["requests_per_s"]
        ax_rate.plot(xs, [per_second.get(x, 0) for x in xs], color=colors[phase],
                     label=f"{phase} ({overall:.0f} req/s overall)")  # fmt: skip
        lat = sorted(r[1] * 1000 for r in records if r[2] == "ok")
        if lat:
            ax_cdf.plot(lat, [(i + 1) / len(lat) * 100 for i in range(len(lat))],
                        color=colors[phase], label=phase)  # fmt: skip
            for pct, style in ((50, ":"), (95, "--"), (99, "-.")):
                ax_cdf.axvline(percentile(lat, pct), color=colors[phase], ls=style, lw=0.8)
            lines.append(
                f"{phase:<8} p50 {percentile(lat, 50):6.1f}  p95 {percentile(lat, 95):6.1f}  "
                f"p99 {percentile(lat, 99):6.1f} ms"
            )
    ax_cdf.text(0.98, 0.04, "\n".join(lines), transform=ax_cdf.transAxes, ha="right",
                va="bottom", family="monospace", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#999999"})  # fmt: skip
    ax_rate.set_xlabel("seconds into the phase")
    ax_rate.set_ylabel("completed requests per second")
    ax_rate.set_title(f"{args.clients} clients, {args.size_kib} KB PDFs ({args.mode} upload)")
    ax_rate.set_ylim(bottom=0)
    ax_rate.legend(fontsize=8, loc="lower right")
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("latency (ms, log scale)")
    ax_cdf.set_ylabel("% of requests at or below")
    ax_cdf.set_title("Latency distribution (lines: p50 / p95 / p99)")
    ax_cdf.set_ylim(0, 101)
    ax_cdf.legend(fontsize=8, loc="upper left")
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description="Small-file upload/download throughput.")
    parser.add_argument("--duration", type=float, default=30.0, help="Seconds per phase")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent clients")
    parser.add_argument("--procs", type=int, default=2, help="Client processes")
    parser.add_argument("--size-kib", type=int, default=10, help="File size in KiB")
    parser.add_argument("--mode", choices=("raw", "multipart"), default="raw")
    args = parser.parse_args()

    load_before = os.getloadavg()
    # The per-principal upload limit still runs on every request, but above the load one
    # token can offer here: the benchmark measures the work, not the limiter's refusals.
    with VaultServer(
        extra_env={"MEDVAULT_UPLOAD_RATE_LIMIT": "1000000/minute", **EXTRA_ENV}
    ) as vault:
        with vault.client(timeout=30.0) as http:
            patients = [create_patient(http) for _ in range(args.clients)]
            # Warm-up: one upload and one download, so imports and pools are ready.
            body = synthetic_pdf(args.size_kib * 1024)
            warm = http.post("/api/v1/documents",
                             params={"patient_id": patients[0], "document_type": DOC_TYPE},
                             content=body, headers={"Content-Type": "application/pdf"})  # fmt: skip
            warm.raise_for_status()
            http.get(f"/api/v1/documents/{warm.json()['id']}/content").raise_for_status()

        print(f"upload: {args.clients} clients for {args.duration:g} s ...")
        upload = run_phase(phase="upload", vault=vault, args=args, targets=patients)
        ids = [r[3] for r in upload["records"] if r[2] == "ok"]
        random.shuffle(ids)
        print(f"download: {args.clients} clients for {args.duration:g} s over {len(ids)} docs ...")
        download = run_phase(phase="download", vault=vault, args=args, targets=ids)
        server_rss = psutil.Process(vault.pid).memory_info().rss
    load_after = os.getloadavg()

    phases = {"upload": upload, "download": download}
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "clients": args.clients,
            "client_processes": args.procs,
            "client": "httpx.AsyncClient, keep-alive, one connection per client",
            "duration_s_per_phase": args.duration,
            "size_bytes": args.size_kib * 1024,
            "upload_mode": args.mode,
            "storage": "embedded default: SQLite (WAL) + filesystem blobs",
            "note": "client and server share the same 2 cores",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "upload": upload["summary"],
        "download": download["summary"],
        "server_rss_mib_at_end": round(server_rss / 2**20, 1),
    }
    json_path = write_json(NAME, result)
    png_path = plot(phases, args)

    for phase in ("upload", "download"):
        s = result[phase]
        lat = s["latency"]
        print(
            f"  {phase:<8} {s['requests_per_s']:7.1f} req/s  p50 {lat['p50_ms']:6.1f} ms  "
            f"p95 {lat['p95_ms']:6.1f} ms  p99 {lat['p99_ms']:6.1f} ms  ok {s['ok']}  "
            f"errors {s['errors'] or 0}  server {s['server_cpu_cores']} cores, "
            f"machine {s['machine_busy_cores']} cores busy"
        )
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
