"""Load and soak: 100 concurrent clients with a realistic mix against 1 and 3 instances.

Each configuration is a fresh cluster (tests/support/cluster.py): N ``medvault serve``
instances (one server process each) and ``medvault worker`` processes behind Debian's
nginx (the shipped deploy/nginx/medvault.conf, round-robin), on a private, durable
PostgreSQL server sized for their connection pools, the moto S3 server and a private
Redis. The mix (tests/support/load_mix.py) is mostly reads (lists,
downloads, ranges, FHIR search, portal pages), some uploads (single request,
multipart, tus in PATCHes, FHIR transactions) and logins and refreshes; every client
logs in (API and portal) before the timed phase. Reported per configuration:
requests/s, p50/p99 latency (overall and per operation), errors (any answer other than
the one the operation expects; the target is 0), and the RSS of every server and worker
process over time, with its growth from the end of the first fifth of the run (warm-up)
to the end. The 1-instance run is the baseline the others are compared against.

The clients are threads of this process, so on a 2-core machine the client competes
with the cluster for the cores; the comparison between configurations is what counts.

    .venv/bin/python bench/load.py                       # 10 min per configuration
    .venv/bin/python bench/load.py --duration 60         # a short run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    REPO_DIR,
    RESULTS_DIR,
    VENV_BIN,
    MiB,
    free_port,
    latency_summary_ms,
    machine_info,
    new_figure,
    save_figure,
    stop_process,
    wait_for_http,
    write_json,
)

if str(REPO_DIR) not in sys.path:
    sys.path.append(str(REPO_DIR))  # tests/ is the repo's package, not an installed one
import boto3
import httpx

from medvault.auth.principal import Role
from medvault.runtime import build_runtime
from tests.support.cluster import Cluster, create_databases
from tests.support.factories import patient_payload, text_pdf_bytes
from tests.support.load_mix import Account, Call, MixedLoad
from tests.support.pg_cluster import Cluster as PostgresServer
from tests.support.pg_cluster import private_clusters
from tests.support.services import TEST_S3_KEY
from tests.support.users import create_user

NAME = "load"
BUCKET = "medvault-bench"
RSS_INTERVAL_S = 2.0
BUCKET_S = 5.0  # throughput-over-time resolution
WARM_UP_FRACTION = 0.2


# The bench's own PostgreSQL server, configured as production would be: durable, and
# with room for every process's pools (README, "Connections": up to 106 per instance and
# 90 per worker at the default MEDVAULT_DATABASE_POOL_SIZE). On the machine's shared
# server (max_connections=100) the first 3-instance run answered 2,065 of its requests
# 503, from "too many clients".
POSTGRES_SETTINGS = (
    "max_connections=600",
    "shared_buffers=256MB",
    "synchronous_commit=on",
    "fsync=on",
)


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """moto's S3 as its own process: in this one it would share the GIL with the
    hundred client threads and become the bottleneck it is not meant to be."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, TEST_S3_KEY)  # the cluster's processes inherit them
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/moto-api/", proc=proc)
        yield endpoint
    finally:
        stop_process(proc)


def run_configuration(
    *,
    instances: int,
    workers: int,
    clients: int,
    duration: float,
    pg: PostgresServer,
    s3_endpoint: str,
    folder: Path,
    patients: int,
    accounts: int,
    seed_documents: int,
) -> dict[str, Any]:
    run = f"load_{instances}_{uuid.uuid4().hex[:6]}"
    with Cluster(
        folder / run,
        instances=instances,
        workers=workers,
        database_urls=create_databases(pg, run),
        s3_endpoint_url=s3_endpoint,
        storage_url=f"s3://{BUCKET}/{run}",
        settings={"log_level": "WARNING"},
    ) as cluster:
        token = cluster.create_token("bench")
        runtime = build_runtime(cluster.settings())
        try:
            logins = []
            for _ in range(accounts):
                user = create_user(runtime, Role.CLINICIAN)
                logins.append(Account(user.username, user.password))
        finally:
            runtime.close()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=cluster.url, headers=headers, timeout=60) as http:
            patient_ids = []
            for _ in range(patients):
                created = http.post("/api/v1/patients", json=patient_payload())
                created.raise_for_status()
                patient_ids.append(created.json()["id"])
        load = MixedLoad(
            cluster.url,
            token=token,
            patients=patient_ids,
            accounts=logins,
            pdf=text_pdf_bytes,
            clients=clients,
        )
        load.seed_documents(seed_documents)
        load.prepare_sessions()
        rss: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    sizes = cluster.rss()
                except Exception:  # a process between samples; the next one will do
                    sizes = {}
                rss.append({"t": round(time.monotonic() - started, 2), **sizes})
                stop.wait(RSS_INTERVAL_S)

        started = time.monotonic()
        sampler = threading.Thread(target=sample, name="rss", daemon=True)
        sampler.start()
        load.run(duration=duration)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        errors = load.result.errors()
        if errors:
            print(cluster.logs()[-6000:], file=sys.stderr)
        return summarise(instances, workers, clients, elapsed, started, load, rss, errors)


def summarise(
    instances: int,
    workers: int,
    clients: int,
    elapsed: float,
    started: float,
    load: MixedLoad,
    rss: list[dict[str, Any]],
    errors: list[Call],
) -> dict[str, Any]:
    calls = [c for c in load.result.calls if c.method != "CHECK"]
    per_op: dict[str, list[float]] = {}
    for call in calls:
        per_op.setdefault(call.op, []).append(call.ended - call.started)
    buckets = Counter(int((c.ended - started) // BUCKET_S) for c in calls)
    processes = sorted({key for sample in rss for key in sample if key != "t"})
    growth = {}
    for name in processes:
        series = [(s["t"], s[name]) for s in rss if name in s]
        if len(series) < 3:
            continue
        after_warm_up = [v for t, v in series if t >= elapsed * WARM_UP_FRACTION] or [series[-1][1]]
        # RSS swings by 100+ MiB within seconds (password checks take 64 MiB each, a
        # worker's derivation child comes and goes), so one sample against another says
        # little. What a leak raises is the floor: the lowest RSS of the last fifth of
        # the run against the lowest of the fifth right after warm-up.
        early = [v for t, v in series if 0.2 <= t / elapsed < 0.4] or after_warm_up
        late = [v for t, v in series if t / elapsed >= 0.8] or [series[-1][1]]
        growth[name] = {
            "after_warm_up_mib": round(after_warm_up[0] / MiB, 1),
            "end_mib": round(series[-1][1] / MiB, 1),
            "peak_mib": round(max(v for _, v in series) / MiB, 1),
            "growth_mib": round((series[-1][1] - after_warm_up[0]) / MiB, 1),
            "floor_after_warm_up_mib": round(min(early) / MiB, 1),
            "floor_at_end_mib": round(min(late) / MiB, 1),
            "floor_growth_mib": round((min(late) - min(early)) / MiB, 1),
        }
    return {
        "instances": instances,
        "workers": workers,
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(calls),
        "operations": load.result.operations,
        "requests_per_s": round(len(calls) / elapsed, 1),
        "latency": latency_summary_ms([c.ended - c.started for c in calls]),
        "latency_by_op": {op: latency_summary_ms(v) for op, v in sorted(per_op.items())},
        "errors": len(errors),
        "errors_by_op_status": dict(Counter(f"{c.op} {c.status}" for c in errors)),
        "acknowledged_documents": len(load.result.acknowledged),
        "throughput_over_time": [
            {"t": b * BUCKET_S, "requests_per_s": round(n / BUCKET_S, 1)}
            for b, n in sorted(buckets.items())
        ],
        "rss_samples": rss,
        "rss_growth": growth,
    }


def plot(results: list[dict[str, Any]], name: str, directory: Path) -> Path:
    fig, axes = new_figure(3, width=5.5)
    for result in results:
        label = f"{result['instances']} instance(s)"
        series = result["throughput_over_time"]
        axes[0].plot([p["t"] for p in series], [p["requests_per_s"] for p in series], label=label)
    axes[0].set(title="Throughput", xlabel="s", ylabel="requests/s")
    axes[0].legend()
    labels = [str(r["instances"]) for r in results]
    x = range(len(results))
    axes[1].bar([i - 0.2 for i in x], [r["latency"]["p50_ms"] for r in results], 0.4, label="p50")
    axes[1].bar([i + 0.2 for i in x], [r["latency"]["p99_ms"] for r in results], 0.4, label="p99")
    axes[1].set_xticks(list(x), labels)
    axes[1].set(title="Latency (errors: " + ", ".join(str(r["errors"]) for r in results) + ")",
                xlabel="instances", ylabel="ms")  # fmt: skip
    axes[1].legend()
    for result in results:
        for process in sorted(result["rss_growth"]):
            points = [(s["t"], s[process]) for s in result["rss_samples"] if process in s]
            axes[2].plot(
                [t for t, _ in points],
                [v / MiB for _, v in points],
                label=f"{result['instances']}: {process}",
            )
    axes[2].set(title="RSS per process", xlabel="s", ylabel="MiB")
    axes[2].legend(fontsize=6)
    return save_figure(fig, name, directory=directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds per configuration")
    parser.add_argument(
        "--instances", default="1,3", help="comma-separated; the first is the baseline"
    )
    parser.add_argument("--workers", type=int, default=2, help="medvault worker processes")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--accounts", type=int, default=20, help="clinicians the clients log in as")
    parser.add_argument("--seed-documents", type=int, default=40, help="uploaded before the load")
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    counts = [int(part) for part in args.instances.split(",") if part.strip()]
    results = []
    with (
        private_clusters() as servers,
        moto_process() as s3_endpoint,
        tempfile.TemporaryDirectory(prefix="medvault-bench-load-") as tmp,
    ):
        pg = servers.servers(["bench"], settings=POSTGRES_SETTINGS)["bench"]
        boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        for instances in counts:
            print(f"{instances} instance(s), {args.clients} clients, {args.duration:.0f} s ...")
            result = run_configuration(
                instances=instances,
                workers=args.workers,
                clients=args.clients,
                duration=args.duration,
                pg=pg,
                s3_endpoint=s3_endpoint,
                folder=Path(tmp),
                patients=args.patients,
                accounts=args.accounts,
                seed_documents=args.seed_documents,
            )
            results.append(result)
            print(
                f"  {result['requests_per_s']} req/s, p50 {result['latency']['p50_ms']} ms, "
                f"p99 {result['latency']['p99_ms']} ms, errors {result['errors']} "
                f"{result['errors_by_op_status'] or ''}; RSS growth (MiB): "
                + ", ".join(f"{k} {v['growth_mib']}" for k, v in result["rss_growth"].items())
                + "; RSS floor growth (MiB): "
                + ", ".join(f"{k} {v['floor_growth_mib']}" for k, v in result["rss_growth"].items())
            )
    baseline = results[0]
    comparison = [
        {
            "instances": r["instances"],
            "throughput_ratio": round(r["requests_per_s"] / baseline["requests_per_s"], 2),
            "p50_ratio": round(r["latency"]["p50_ms"] / baseline["latency"]["p50_ms"], 2),
            "p99_ratio": round(r["latency"]["p99_ms"] / baseline["latency"]["p99_ms"], 2),
        }
        for r in results[1:]
    ]
    for row in comparison:
        print(
            f"{row['instances']} vs {baseline['instances']} instance(s): throughput "
            f"{row['throughput_ratio']}x, p50 {row['p50_ratio']}x, p99 {row['p99_ratio']}x"
        )
    data = {
        "machine": machine_info(),
        "settings": vars(args) | {"results_dir": str(args.results_dir)},
        "baseline_instances": baseline["instances"],
        "comparison": comparison,
        "runs": results,
    }
    print(write_json(args.name, data, directory=args.results_dir))
    print(plot(results, args.name, args.results_dir))


if __name__ == "__main__":
    main()
