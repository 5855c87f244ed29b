"""Run the background jobs a test's uploads enqueued, as ``medvault serve``'s worker would."""

from __future__ import annotations

from medvault.jobs import build_worker
from medvault.runtime import Runtime

# Far more than any test enqueues: a job that re-enqueues itself forever fails the test.
MAX_JOBS = 200


def run_due_jobs(runtime: Runtime) -> int:
    """Run every due job to completion (or failure); returns how many ran."""
    worker = build_worker(runtime)
    for ran in range(MAX_JOBS):
        if not worker.run_one():
            return ran
    raise AssertionError(f"more than {MAX_JOBS} jobs: one keeps re-enqueueing itself")
