"""The two load generators of ``small_files.py``, for any server that stores small files.

A ``Target`` says where a server listens and how its upload and download requests look,
so the same client code drives the vault and the naive peer:

* **httpx**: ``connections`` concurrent asyncio loops, each on its own keep-alive
  connection, split over ``procs`` processes (one Python process cannot drive the server
  hard enough by itself). Each loop checks the deadline before it starts a request and
  finishes the one in flight, so the phase runs slightly past ``duration``.
* **wrk** (Debian's 4.x, LuaJIT): ``bench/wrk/*.lua`` with one connection per thread
  (``-t`` = ``-c``), because the scripts time each request themselves; see
  ``bench/wrk/lib.lua`` for why wrk's own percentiles are not used. wrk stops at the
  end of ``duration`` and drops the requests still in flight.

Both report the same summary: requests/s of successful requests over the phase,
p50/p95/p99 of successful requests, errors by kind, and the server's CPU time over the
phase (its whole process tree, so several worker processes or a child are counted) per
successful request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from common import BENCH_DIR, latency_summary_ms, synthetic_pdf

WRK_DIR = BENCH_DIR / "wrk"
WRK_BIN = "wrk"
# wrk counts responses slower than this as "timeout" (only that: it does not abort
# them), and sizes its histogram by it; the scripts count them as successes anyway.
WRK_TIMEOUT_S = 10
FILENAME = "scan.pdf"


@dataclass(frozen=True)
class Target:
    """A server under test and the shape of its requests."""

    name: str
    base_url: str
    pid: int
    token: str | None
    upload_path: str
    download_path: str  # with "{id}"
    upload_fields: tuple[tuple[str, str], ...] = ()  # the same on every upload
    conn_field: str | None = None  # a field whose value differs per connection
    conn_values: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def fields(self, connection: int) -> dict[str, str]:
        fields = dict(self.upload_fields)
        if self.conn_field and self.conn_values:
            fields[self.conn_field] = self.conn_values[connection % len(self.conn_values)]
        return fields


@dataclass(frozen=True)
class Load:
    connections: int
    duration: float
    size: int
    mode: str  # "raw" | "multipart"
    procs: int  # httpx client processes


@dataclass
class PhaseResult:
    summary: dict[str, Any]
    ids: list[str] = field(default_factory=list)  # what an upload phase created


# --------------------------------------------------------------------------- server CPU


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its live descendants and the children it reaped."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child may exit while we look
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@contextlib.contextmanager
def measured(pid: int) -> Iterator[dict[str, float]]:
    """Server CPU, machine CPU and wall time spent inside the block."""
    out: dict[str, float] = {}
    cpu0, busy0, wall0 = tree_cpu_seconds(pid), machine_busy_seconds(), time.perf_counter()
    yield out
    out["wall_s"] = time.perf_counter() - wall0
    out["server_cpu_s"] = tree_cpu_seconds(pid) - cpu0
    out["machine_busy_s"] = machine_busy_seconds() - busy0


def settle(pids: list[int], *, quiet_cores: float = 0.05, timeout: float = 15.0) -> float:
    """Wait until the servers are idle (work left over from the previous phase, e.g.
    sealing its audit events, would otherwise land on the next one); returns seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(tree_cpu_seconds(pid) for pid in pids)
        time.sleep(0.5)
        if sum(tree_cpu_seconds(pid) for pid in pids) - before < quiet_cores * 0.5:
            break
    return round(time.monotonic() - started, 2)


def summarise(
    *,
    client: str,
    requests: int,
    ok: int,
    errors: dict[str, int],
    duration: float,
    latency: dict[str, float],
    usage: dict[str, float],
) -> dict[str, Any]:
    wall = usage["wall_s"] or math.nan
    return {
        "client": client,
        "requests": requests,
        "ok": ok,
        "errors": errors,
        "error_count": sum(errors.values()),
        "duration_s": round(duration, 3),
        "requests_per_s": round(ok / duration, 1) if duration > 0 else 0.0,
        "latency": latency,
        "server_cpu_s": round(usage["server_cpu_s"], 3),
        "server_cpu_ms_per_request": (
            round(usage["server_cpu_s"] * 1000 / ok, 3) if ok else math.nan
        ),
        "server_cpu_cores": round(usage["server_cpu_s"] / wall, 2),
        "machine_busy_cores": round(usage["machine_busy_s"] / wall, 2),
    }


# --------------------------------------------------------------------------- httpx


@dataclass(frozen=True)
class Job:
    """What one client process does: ``tasks`` concurrent loops until the deadline."""

    phase: str  # "upload" | "download"
    target: Target
    load: Load
    first_connection: int  # index of this process's first loop among all connections
    tasks: int
    start_at: float  # wall clock (time.time), shared by every process
    ids: list[str]  # download: this process's stripe of the ids


# One record per request: (latency s, outcome, created id)
Record = tuple[float, str, str]


async def _upload_loop(client: httpx.AsyncClient, job: Job, connection: int) -> list[Record]:
    records: list[Record] = []
    fields = job.target.fields(connection)
    deadline = job.start_at + job.load.duration
    while time.time() < deadline:
        data = synthetic_pdf(job.load.size)
        started = time.perf_counter()
        try:
            if job.load.mode == "multipart":
                response = await client.post(
                    job.target.upload_path,
                    data=fields,
                    files={"file": (FILENAME, data, "application/pdf")},
                )
            else:
                response = await client.post(
                    job.target.upload_path,
                    params={**fields, "filename": FILENAME},
                    content=data,
                    headers={"Content-Type": "application/pdf"},
                )
            latency = time.perf_counter() - started
            ok = response.status_code == 201
            outcome = "ok" if ok else f"http_{response.status_code}"
            doc_id = str(response.json()["id"]) if ok else ""
        except httpx.HTTPError as exc:
            latency, outcome, doc_id = time.perf_counter() - started, type(exc).__name__, ""
        records.append((latency, outcome, doc_id))
    return records


async def _download_loop(client: httpx.AsyncClient, job: Job, ids: list[str]) -> list[Record]:
    records: list[Record] = []
    deadline = job.start_at + job.load.duration
    position = 0
    while time.time() < deadline and ids:
        doc_id = ids[position % len(ids)]
        position += 1
        started = time.perf_counter()
        try:
            response = await client.get(job.target.download_path.format(id=doc_id))
            latency = time.perf_counter() - started
            if response.status_code != 200:
                outcome = f"http_{response.status_code}"
            elif len(response.content) != job.load.size:
                outcome = "wrong_length"
            else:
                outcome = "ok"
        except httpx.HTTPError as exc:
            latency, outcome = time.perf_counter() - started, type(exc).__name__
        records.append((latency, outcome, doc_id))
    return records


async def _run_job(job: Job) -> list[Record]:
    limits = httpx.Limits(max_connections=job.tasks, max_keepalive_connections=job.tasks)
    async with httpx.AsyncClient(
        base_url=job.target.base_url, headers=job.target.headers(), limits=limits, timeout=60.0
    ) as client:
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        if job.phase == "upload":
            loops = [_upload_loop(client, job, job.first_connection + i) for i in range(job.tasks)]
        else:
            shares = [job.ids[i :: job.tasks] for i in range(job.tasks)]
            loops = [_download_loop(client, job, ids) for ids in shares if ids]
        results = await asyncio.gather(*loops)
    return [record for records in results for record in records]


def run_job(job: Job) -> list[Record]:
    """Entry point of a client process."""
    return asyncio.run(_run_job(job))


def run_httpx(target: Target, phase: str, load: Load, ids: list[str]) -> PhaseResult:
    procs = max(1, min(load.procs, load.connections))
    per_proc = [load.connections // procs + (1 if i < load.connections % procs else 0)
                for i in range(procs)]  # fmt: skip
    start_at = time.time() + 2.0  # room for every process to start and connect
    jobs: list[Job] = []
    first = 0
    for index, tasks in enumerate(per_proc):
        jobs.append(Job(phase, target, load, first, tasks, start_at, ids[index::procs]))
        first += tasks
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pending = pool.map_async(run_job, jobs)
        time.sleep(max(0.0, start_at - time.time()))
        with measured(target.pid) as usage:
            parts = pending.get(timeout=load.duration + 600)
    records = [r for part in parts for r in part]
    ok = [r for r in records if r[1] == "ok"]
    summary = summarise(
        client="httpx",
        requests=len(records),
        ok=len(ok),
        errors=dict(Counter(r[1] for r in records if r[1] != "ok")),
        duration=usage["wall_s"],
        latency=latency_summary_ms([r[0] for r in ok]),
        usage=usage,
    )
    summary["client_processes"] = procs
    return PhaseResult(summary, [r[2] for r in ok if r[2]])


# --------------------------------------------------------------------------- wrk


def run_wrk(target: Target, phase: str, load: Load, ids: list[str]) -> PhaseResult:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        ids_path = Path(tmp) / "ids.txt"
        env = {"WRK_SIZE": str(load.size), "WRK_TOKEN": target.token or ""}
        if phase == "upload":
            script = WRK_DIR / f"upload_{load.mode}.lua"
            fields = dict(target.upload_fields)
            if load.mode == "raw":
                fields["filename"] = FILENAME
                query = "&".join(f"{k}={v}" for k, v in fields.items())
                env["WRK_PATH"] = f"{target.upload_path}?{query}"
            else:
                env["WRK_PATH"] = target.upload_path
                env["WRK_FIELDS"] = "&".join(f"{k}={v}" for k, v in fields.items())
            if target.conn_field and target.conn_values:
                env["WRK_CONN_FIELD"] = f"{target.conn_field}={','.join(target.conn_values)}"
            env["WRK_IDS_OUT"] = str(ids_path)
        else:
            script = WRK_DIR / "download.lua"
            ids_path.write_text("\n".join(ids) + "\n")
            env["WRK_IDS_FILE"] = str(ids_path)
            env["WRK_PATH_TEMPLATE"] = target.download_path
            env["WRK_EXPECT_BYTES"] = str(load.size)
        seconds = max(1, round(load.duration))  # wrk takes whole seconds
        argv = [WRK_BIN, f"-t{load.connections}", f"-c{load.connections}", f"-d{seconds}s",
                f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script), target.base_url]  # fmt: skip
        with measured(target.pid) as usage:
            proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True,
                                  text=True, timeout=seconds + 120, check=False)  # fmt: skip
        report = _wrk_report(proc)
        created = ids_path.read_text().split() if phase == "upload" and ids_path.exists() else []
    lat = report["latency_ms"]
    summary = summarise(
        client="wrk",
        requests=int(report["requests"]),
        ok=int(report["ok"]),
        errors={str(k): int(v) for k, v in report["errors"].items()},
        duration=float(report["duration_s"]),
        latency={f"{k}_ms" if k != "count" else k: v for k, v in lat.items()},
        usage=usage,
    )
    summary["wrk_co_corrected_ms"] = report["wrk_co_corrected_ms"]
    summary["over_timeout"] = report["over_timeout"]
    summary["threads_and_connections"] = report["threads"]
    return PhaseResult(summary, created)


def _wrk_report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
            f"{proc.stdout.strip()[-500:]}"
        )
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def run_phase(client: str, target: Target, phase: str, load: Load, ids: list[str]) -> PhaseResult:
    runner = run_wrk if client == "wrk" else run_httpx
    return runner(target, phase, load, ids)
