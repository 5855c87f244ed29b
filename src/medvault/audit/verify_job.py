"""``audit verify`` as a background job, for the portal's "Verify now".

A full verification takes tens of seconds on a large log (27 s at a million events),
too long for a request. The portal enqueues this job, then shows its progress (events
checked of the tree's size) and, when done, its result, which is stored on the job row:
counts, indices and the finding kinds, never event contents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.verify import verify_log
from medvault.runtime import Runtime

ACTOR = "audit-verify"
# The attempts a verification job gets (``queue.enqueue(max_attempts=...)``): one retry
# for a run cut short (a database restart); a log that fails to verify is a result, not
# an error, so it is never retried.
MAX_ATTEMPTS = 2
# Findings kept with the result; the CLI lists them all.
LISTED_FINDINGS = 20


def run_verify_job(
    runtime: Runtime,
    payload: Mapping[str, Any],
    progress: Callable[[int, int], None],
) -> dict[str, Any]:
    started = time.perf_counter()
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        # One row update a second at most: progress is for people, not a log of batches.
        now = time.perf_counter()
        if now - last[0] >= 1.0 or done == total:
            last[0] = now
            progress(done, total)

    report = verify_log(runtime=runtime, on_progress=on_progress)
    seconds = round(time.perf_counter() - started, 3)
    summary = report.summary()
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=AuditContext.system(ACTOR),
            action="audit.verify",
            resource_type="AuditLog",
            details={
                "healthy": report.healthy,
                "tree_size": report.tree_size,
                "first_bad_index": report.first_bad_index,
                "via": "portal",
                "requested_by": str(payload.get("requested_by", ""))[:200],
            },
        )
        session.commit()
    return {
        **summary,
        "seconds": seconds,
        "findings": [
            {"kind": f.kind.value, "index": f.index, "message": f.message}
            for f in report.findings[:LISTED_FINDINGS]
        ],
    }
