"""An audit-verification job row, as the portal's verification page shows it.

The job stores small JSON objects: ``progress`` ({done, total}) while it runs, and
``result`` when done (``audit.verify_job.run_verify_job``). A row written by another
version of the vault may lack a key, so every read has a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from medvault.processing.models import Job, JobState


@dataclass(frozen=True)
class Finding:
    kind: str
    index: int | None
    message: str


@dataclass(frozen=True)
class VerifyView:
    id: str
    state: str
    done: int | None = None
    total: int | None = None
    # The last attempt's error: on a job waiting for its retry, or a dead one.
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in (JobState.READY, JobState.RUNNING)

    @property
    def percent(self) -> int | None:
        if self.done is None or not self.total:
            return None
        return min(100, self.done * 100 // self.total)


def _json(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def verify_view(job: Job) -> VerifyView:
    progress = _json(job.progress)
    result = _json(job.result) if job.state == JobState.DONE else {}
    findings = [
        Finding(str(item.get("kind", "")), _int(item.get("index")), str(item.get("message", "")))
        for item in result.get("findings") or ()
        if isinstance(item, dict)
    ]
    return VerifyView(
        id=str(job.id),
        state=str(job.state),
        done=_int(progress.get("done")),
        total=_int(progress.get("total")),
        error=job.last_error,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=result,
        findings=findings,
    )
