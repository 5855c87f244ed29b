"""A worker process with one test-only job kind, for the crash and concurrency tests.

    python worker_process.py LOG HOLD_SECONDS LEASE_SECONDS [--once]

It opens the vault from ``MEDVAULT_*`` like ``medvault worker`` and runs the real
``Worker`` on a registry holding only ``test-slow``, whose handler appends
``start``/``done`` lines to LOG around holding the job for HOLD_SECONDS. Lines are
short single writes to a file opened for appending, so lines from several processes
never interleave. A payload with ``"rendezvous": true`` makes a process's first job
wait until two different workers have started one, so a test knows both took part.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from medvault.config import Settings
from medvault.processing.worker import JobContext, JobKind, JobRegistry, Worker
from medvault.runtime import build_runtime

KIND = "test-slow"
RENDEZVOUS_SECONDS = 60.0


def _owners_started(log: Path) -> int:
    lines = log.read_text().splitlines() if log.exists() else []
    return len({line.split()[3] for line in lines if line.startswith("start ")})


def main(argv: list[str]) -> int:
    log, hold, lease = Path(argv[1]), float(argv[2]), float(argv[3])
    once = "--once" in argv[4:]
    runtime = build_runtime(Settings())
    owner = f"test-worker:{os.getpid()}"

    def note(event: str, job: JobContext) -> None:
        line = f"{event} {job.job_id} {job.attempt} {owner} {time.monotonic_ns()}\n"
        descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)

    def handler(job: JobContext) -> dict[str, Any]:
        note("start", job)
        if job.payload.get("rendezvous"):
            deadline = time.monotonic() + RENDEZVOUS_SECONDS
            while _owners_started(log) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        # Not ctx.wait: a held job must not end early when the worker is told to stop.
        until = time.monotonic() + hold
        while time.monotonic() < until:
            time.sleep(0.01)
        note("done", job)
        return {"owner": owner}

    registry = JobRegistry()
    registry.register(JobKind(KIND, handler, lease=timedelta(seconds=lease)))
    worker = Worker(runtime.clinical, registry, owner=owner, poll_interval=0.05)

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    print(f"worker {owner} ready", flush=True)
    if once:
        while worker.run_one():
            pass
    else:
        worker.run()
    runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
