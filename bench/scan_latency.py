"""Malware scanning: time from upload to ``clean``, against the same upload unscanned.

Setup: a real clamd (``tests/support/clamd.py``: a test signature database, EICAR only,
limits raised to 512 MB) and two ``medvault serve`` processes on SQLite, each with its
embedded worker thread (``medvault.jobs.start_worker``) and FHIR's SHA-1 job on (the
defaults). **scanned** has ``MEDVAULT_CLAMD_URL`` set, so every upload also enqueues a
scan job; **plain** has no scanner, the baseline.

Each round measures both, alternating which goes first. For each: start a background
load (``--load-threads`` threads uploading fresh 10 KB PDFs continuously, at most
``--load-rate`` uploads/s in all; 0 = as fast as they can), let it settle, then upload a
fresh 10 KB PDF and the ``--large-mb`` file with curl (raw body), one at a time. The
large file is a well-formed PDF whose bulk is one random image stream (``--payload
random``: ``%PDF-1.7`` + random bytes, which qpdf's active-content check must rebuild
at ~30 MB/s on the upload path, see large_files.py):

* **time to 201**: curl's ``time_total``;
* **time to clean** (scanned only): time to 201 plus the time until the version's
  ``scan_state`` reads ``clean``, polled every 5 ms from the server's SQLite file
  (read-only; the benchmark owns the data dir), then confirmed through the API. The
  scan job's row gives the split: waiting in the queue, then scanning.

The load stops after each variant and the queue is left to drain before the next.
Queue depth (ready + running scan and SHA-1 jobs) is sampled every 0.25 s. clamd's raw
INSTREAM throughput for the large file (``ClamdClient.scan`` straight from the bench,
no vault) is measured idle before round 1 and under the same load in every round, with
clamd's CPU time.

    .venv/bin/python bench/scan_latency.py                            # 5 rounds, 15/s load
    .venv/bin/python bench/scan_latency.py --load-rate 0 --rounds 2 --name scan_latency_saturated
    .venv/bin/python bench/scan_latency.py --rounds 1 --large-mb 20    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from common import (
    MB,
    REPO_DIR,
    MiB,
    VaultServer,
    create_patient,
    machine_info,
    median,
    new_figure,
    save_figure,
    synthetic_pdf,
    write_json,
    write_synthetic_pdf,
)
from large_files import write_wellformed_pdf
from medvault.processing.clamd import ClamdClient

if str(REPO_DIR) not in sys.path:
    sys.path.append(str(REPO_DIR))  # tests/ is the repo's package, not an installed one
from tests.support.clamd import running_clamd

NAME = "scan_latency"
DOC_TYPE = "11502-2"
SMALL_BYTES = 10_000
CLEAN_TIMEOUT_S = 600.0
LOAD_SETTLE_S = 2.0
VARIANTS = ("scanned", "plain")


@dataclass
class Sample:
    variant: str
    size: str
    run: int
    upload_s: float
    clean_s: float | None = None
    queue_wait_s: float | None = None
    scan_run_s: float | None = None
    attempts: int | None = None
    jobs_ahead: int = 0
    load_uploads_per_s: float = 0.0


class VaultDb:
    """Read-only look into a vault's SQLite file: scan states and the job queue."""

    def __init__(self, vault: VaultServer) -> None:
        path = vault.data_dir / "clinical.db"
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.lock = threading.Lock()

    def one(self, sql: str, *args: object) -> tuple[Any, ...] | None:
        with self.lock:
            # fetchall: the statement is done and its read snapshot released at once.
            rows: list[tuple[Any, ...]] = self.conn.execute(sql, args).fetchall()
            return rows[0] if rows else None

    def queue_depth(self) -> int:
        # Per-upload jobs only: periodic ones (reconciler, scrub) stay armed for later.
        row = self.one(
            "SELECT count(*) FROM jobs WHERE state IN ('ready', 'running')"
            " AND kind IN ('scan', 'fhir-sha1')"
        )
        return int(row[0]) if row else 0

    def scan_state(self, document_id: str) -> str | None:
        # SQLAlchemy's Uuid type stores 32 hex digits on SQLite.
        row = self.one(
            "SELECT scan_state FROM document_versions WHERE document_id = ?",
            uuid.UUID(document_id).hex,
        )
        return str(row[0]) if row else None

    def scan_job(self, document_id: str) -> tuple[float, float, int] | None:
        """(seconds queued, seconds from claim to done, attempts) of the version's scan."""
        version = self.one(
            "SELECT id FROM document_versions WHERE document_id = ?", uuid.UUID(document_id).hex
        )
        row = version and self.one(
            "SELECT created_at, started_at, finished_at, attempts FROM jobs WHERE dedupe_key = ?",
            f"scan:{uuid.UUID(version[0])}",  # medvault.processing.kinds.scan_key
        )
        if row is None or row[1] is None or row[2] is None:
            return None
        created, started, finished = (datetime.fromisoformat(v) for v in row[:3])
        return (
            (started - created).total_seconds(),
            (finished - started).total_seconds(),
            int(row[3]),
        )

    def wait_idle(self, timeout: float = CLEAN_TIMEOUT_S) -> dict[str, float]:
        """Wait until no per-upload job is left: how many there were and how long it took."""
        depth, started = self.queue_depth(), time.perf_counter()
        while self.queue_depth() > 0:
            if time.perf_counter() - started > timeout:
                raise TimeoutError("the job queue did not drain")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        return {
            "jobs": depth,
            "seconds": round(seconds, 2),
            "jobs_per_s": round(depth / seconds, 1),
        }


class Load:
    """Background uploaders: threads posting fresh 10 KB PDFs to one vault until stopped."""

    def __init__(self, threads: int, rate: float) -> None:
        self.interval = threads / rate if rate > 0 else 0.0  # per thread
        self.ok = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: list[threading.Thread] = []

    def _loop(self, vault: VaultServer, patient_id: str) -> None:
        url = f"/api/v1/documents?patient_id={patient_id}&document_type={DOC_TYPE}"
        headers = {"Content-Type": "application/pdf"}
        with vault.client(timeout=60.0) as client:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                try:
                    status = client.post(url, content=synthetic_pdf(SMALL_BYTES), headers=headers)
                    good = status.status_code == 201
                except httpx.HTTPError:
                    good = False
                with self._lock:
                    self.ok += good
                    self.errors += not good
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def start(self, vault: VaultServer, patient_ids: list[str]) -> None:
        self._stop.clear()
        self._running = [
            threading.Thread(target=self._loop, args=(vault, p), daemon=True) for p in patient_ids
        ]
        for thread in self._running:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(60)


@contextmanager
def depth_sampler(dbs: dict[str, VaultDb], log: list[tuple[float, str, int]]) -> Iterator[None]:
    stop = threading.Event()
    t0 = time.perf_counter()

    def run() -> None:
        while not stop.wait(0.25):
            for variant, db in dbs.items():
                log.append((time.perf_counter() - t0, variant, db.queue_depth()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def curl_upload(vault: VaultServer, patient_id: str, path: Path, body: Path) -> tuple[float, str]:
    """Raw-body upload with curl; returns (time_total, document id)."""
    url = (
        f"{vault.base_url}/api/v1/documents?patient_id={patient_id}"
        f"&document_type={DOC_TYPE}&filename={path.name}&on_duplicate=allow"
    )
    out = subprocess.run(
        ["curl", "-sS", "-H", "Expect:", "-H", f"Authorization: Bearer {vault.token}",
         "-H", "Content-Type: application/pdf", "-X", "POST", "-T", str(path),
         "-o", str(body), "-w", "%{json}", url],
        capture_output=True, check=False, timeout=1800,
    )  # fmt: skip
    info = json.loads(out.stdout or b"{}")
    if out.returncode != 0 or info.get("http_code") != 201:
        raise RuntimeError(f"upload failed: {out.stderr.decode()} {body.read_text()[:300]}")
    return float(info["time_total"]), str(json.loads(body.read_text())["id"])


def wait_clean(db: VaultDb, document_id: str) -> float:
    """Seconds from now until the version reads clean (raises on any other verdict)."""
    started = time.perf_counter()
    while (state := db.scan_state(document_id)) in ("pending", None):
        if time.perf_counter() - started > CLEAN_TIMEOUT_S:
            raise TimeoutError(f"document {document_id} still {state}")
        time.sleep(0.005)
    if state != "clean":
        raise RuntimeError(f"document {document_id} scanned {state}")
    return time.perf_counter() - started


def measure(vault: VaultServer, db: VaultDb, patient_id: str, path: Path, sample: Sample) -> Sample:
    body = path.with_suffix(".json")
    sample.jobs_ahead = db.queue_depth()
    sample.upload_s, document_id = curl_upload(vault, patient_id, path, body)
    if sample.variant == "scanned":
        sample.clean_s = sample.upload_s + wait_clean(db, document_id)
        with vault.client(timeout=30.0) as client:  # what a client sees, untimed
            shown = client.get(f"/api/v1/documents/{document_id}").json()["scan"]["state"]
        if shown != "clean":
            raise RuntimeError(f"the API shows {shown} for a clean version")
        split = db.scan_job(document_id)
        if split is not None:
            sample.queue_wait_s, sample.scan_run_s, sample.attempts = split
    print(
        f"  run {sample.run} {sample.variant:<8} {sample.size:<6} 201 after "
        f"{sample.upload_s * 1000:8.1f} ms"
        + (f", clean after {sample.clean_s * 1000:8.1f} ms" if sample.clean_s else "")
        + f"  ({sample.jobs_ahead} jobs ahead)"
    )
    return sample


def clamd_raw(address: str, pid: int, path: Path) -> dict[str, float]:
    """One INSTREAM of ``path`` straight to clamd: wall seconds, MB/s and clamd CPU s."""
    proc = psutil.Process(pid)

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(MiB):
                yield chunk

    cpu = sum(proc.cpu_times()[:2])
    started = time.perf_counter()
    verdict = ClamdClient(address, timeout=CLEAN_TIMEOUT_S).scan(chunks())
    seconds = time.perf_counter() - started
    if verdict.infected:
        raise RuntimeError("clamd flagged the synthetic file")
    size = path.stat().st_size
    return {
        "seconds": round(seconds, 3),
        "mb_s": round(size / seconds / MB, 1),
        "clamd_cpu_s": round(sum(proc.cpu_times()[:2]) - cpu, 2),
    }


def summarize(samples: list[Sample], raw: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in ("small", "large"):
        plain = [s for s in samples if s.size == size and s.variant == "plain"]
        scanned = [s for s in samples if s.size == size and s.variant == "scanned"]
        base = median([s.upload_s for s in plain])
        clean = median([s.clean_s for s in scanned if s.clean_s is not None])
        out[size] = {
            "plain_upload_median_s": round(base, 4),
            "scanned_upload_median_s": round(median([s.upload_s for s in scanned]), 4),
            "scanned_clean_median_s": round(clean, 4),
            "clean_vs_plain_upload": round(clean / base, 2),
            "queue_wait_median_s": round(median([s.queue_wait_s or 0.0 for s in scanned]), 4),
            "scan_run_median_s": round(median([s.scan_run_s or 0.0 for s in scanned]), 4),
            "jobs_ahead_median": median([float(s.jobs_ahead) for s in scanned]),
            "load_uploads_per_s_median": round(
                median([s.load_uploads_per_s for s in samples if s.size == size]), 1
            ),
        }
    for key, runs in raw.items():
        out[f"clamd_raw_{key}"] = {
            "median_mb_s": median([r["mb_s"] for r in runs]),
            "median_clamd_cpu_s": median([r["clamd_cpu_s"] for r in runs]),
            "runs": runs,
        }
    return out


def plot(
    samples: list[Sample], depth: list[tuple[float, str, int]], labels: dict[str, str], name: str
) -> Path:
    fig, axes = new_figure(3, width=5.0, height=4.4)
    bars = [("plain", "upload_s", "plain\n201", "#999999"),
            ("scanned", "upload_s", "scanned\n201", "#1f77b4"),
            ("scanned", "clean_s", "scanned\nclean", "#d62728")]  # fmt: skip
    for ax, size in zip(axes[:2], ("small", "large"), strict=True):
        for x, (variant, field, _, color) in enumerate(bars):
            values = [
                float(getattr(s, field)) * 1000
                for s in samples
                if s.size == size and s.variant == variant and getattr(s, field) is not None
            ]
            med = median(values)
            ax.bar(x, med, color=color, width=0.65)
            ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
            ax.annotate(f"{med:.0f}", (x, med), ha="center", va="bottom", fontsize=9,
                        xytext=(0, 3), textcoords="offset points")  # fmt: skip
        ax.set_xticks(range(len(bars)), [b[2] for b in bars], fontsize=8)
        ax.set_ylabel("ms from upload start; bar = median, dots = rounds")
        ax.set_title(f"{labels[size]} PDF under background load")
    ax = axes[2]
    for variant, color in (("scanned", "#1f77b4"), ("plain", "#999999")):
        points = [(t, d) for t, v, d in depth if v == variant]
        ax.plot([t for t, _ in points], [d for _, d in points], color=color, lw=1, label=variant)
    ax.set_xlabel("seconds")
    ax.set_ylabel("ready + running jobs")
    ax.set_title("Job queue depth (0.25 s samples)")
    ax.legend(fontsize=8)
    return save_figure(fig, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large-mb", type=int, default=100, help="Large file, MB (10^6 B)")
    parser.add_argument("--load-threads", type=int, default=3)
    parser.add_argument(
        "--load-rate", type=float, default=15.0, help="Total uploads/s (15); 0: no cap"
    )
    parser.add_argument("--payload", choices=("pdf", "random"), default="pdf")
    parser.add_argument("--name", default=NAME, help="Result file name under bench/results")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="medvault-bench-scan-"))
    small, large = workdir / "small.pdf", workdir / "large.pdf"
    write_large = write_wellformed_pdf if args.payload == "pdf" else write_synthetic_pdf
    write_large(large, args.large_mb * MB)
    env = {
        "MEDVAULT_MAX_UPLOAD_BYTES": str(2 * args.large_mb * MB),
        # The load is one principal; the default 600/minute would answer it with 429s.
        "MEDVAULT_UPLOAD_RATE_LIMIT": "1000000/minute",
    }
    samples: list[Sample] = []
    depth: list[tuple[float, str, int]] = []
    raw: dict[str, list[dict[str, float]]] = {"idle": [], "under_load": []}
    drains: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    load = Load(args.load_threads, args.load_rate)
    load_before = os.getloadavg()
    try:
        with (
            running_clamd(workdir / "clamd") as clamd,
            VaultServer(extra_env={**env, "MEDVAULT_CLAMD_URL": clamd.address},
                        name="scanned") as scanned,
            VaultServer(extra_env=env, name="plain") as plain,
        ):  # fmt: skip
            vaults = {"scanned": scanned, "plain": plain}
            dbs = {v: VaultDb(vault) for v, vault in vaults.items()}
            patients: dict[str, list[str]] = {}
            for variant, vault in vaults.items():
                with vault.client(timeout=30.0) as client:
                    patients[variant] = [
                        create_patient(client) for _ in range(args.load_threads + 1)
                    ]
                # Warm-up, untimed: imports, pools, the first scan of each size.
                small.write_bytes(synthetic_pdf(SMALL_BYTES))
                for path in (small, large):
                    warm = Sample(variant, "warm", 0, 0.0)
                    measure(vault, dbs[variant], patients[variant][0], path, warm)
                dbs[variant].wait_idle()
            for _ in range(3):
                raw["idle"].append(clamd_raw(clamd.address, clamd.process.pid, large))
            print(f"clamd idle INSTREAM: {raw['idle']}")
            with depth_sampler(dbs, depth):
                for run in range(1, args.rounds + 1):
                    for variant in VARIANTS if run % 2 else VARIANTS[::-1]:
                        ok_before, started = load.ok, time.perf_counter()
                        load.start(vaults[variant], patients[variant][1:])
                        try:
                            time.sleep(LOAD_SETTLE_S)
                            small.write_bytes(synthetic_pdf(SMALL_BYTES))
                            for path, size in ((small, "small"), (large, "large")):
                                sample = Sample(variant, size, run, 0.0)
                                args_ = (vaults[variant], dbs[variant], patients[variant][0])
                                samples.append(measure(*args_, path, sample))
                            if variant == "plain":
                                raw["under_load"].append(
                                    clamd_raw(clamd.address, clamd.process.pid, large)
                                )
                        finally:
                            load.stop()
                        rate = (load.ok - ok_before) / (time.perf_counter() - started)
                        for sample in samples[-2:]:
                            sample.load_uploads_per_s = round(rate, 1)
                        drains[variant].append(dbs[variant].wait_idle())
    finally:
        load.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()

    summary = summarize(samples, raw)
    upload_mb_s = args.large_mb / summary["large"]["plain_upload_median_s"]
    scanned_upload_mb_s = args.large_mb / summary["large"]["scanned_upload_median_s"]
    clamd_mb_s = summary["clamd_raw_under_load"]["median_mb_s"]
    serial = 1 / (1 / upload_mb_s + 1 / clamd_mb_s)
    inline = {
        "plain_upload_mb_s": round(upload_mb_s, 1),
        "scanned_upload_mb_s": round(scanned_upload_mb_s, 1),
        "clamd_instream_mb_s_under_load": clamd_mb_s,
        "clamd_instream_mb_s_idle": summary["clamd_raw_idle"]["median_mb_s"],
        "serial_inline_upload_mb_s": round(serial, 1),
        "serial_inline_vs_plain": round(serial / upload_mb_s, 3),
        "overlapped_inline_upper_bound_mb_s": round(min(upload_mb_s, clamd_mb_s), 1),
    }
    result = {
        "benchmark": args.name,
        "machine": machine_info(),
        "config": {
            "rounds": args.rounds,
            "small_bytes": SMALL_BYTES,
            "large_bytes": args.large_mb * MB,
            "large_payload": args.payload,
            "load_threads": args.load_threads,
            "load_rate_cap_per_s": args.load_rate or None,
            "backend": "SQLite + filesystem (medvault serve defaults), embedded worker",
            "worker_poll_seconds": 1.0,
            "fhir_attachment_sha1": True,
            "clamd": "tests/support/clamd.py: test signatures only (EICAR), 512M limits",
            "client": "curl raw-body upload; load: httpx threads in the bench process",
            "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "summary": summary,
        "inline_scan_estimate": inline,
        "queue_drain_after_load_s": drains,
        "samples": [asdict(s) for s in samples],
        "load_errors": load.errors,
    }
    json_path = write_json(args.name, result)
    labels = {"small": f"{SMALL_BYTES // 1000} KB", "large": f"{args.large_mb} MB"}
    png_path = plot(samples, depth, labels, args.name)
    print(json.dumps({"summary": summary, "inline": inline, "drains": drains}, indent=1))
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
