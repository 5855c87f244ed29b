"""The job table: a transactional outbox that workers drain."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from medvault.db.base import ClinicalBase
from medvault.db.types import UTCDateTime


class JobState(StrEnum):
    # Waiting for its run_after time, or for a free worker.
    READY = "ready"
    # Claimed by a worker that holds a lease; an expired lease makes it claimable again.
    RUNNING = "running"
    DONE = "done"
    # Out of attempts: parked where operators see it (`medvault jobs list --state dead`).
    DEAD = "dead"
    CANCELLED = "cancelled"


class Job(ClinicalBase):
    """One unit of background work, written in the same transaction as its cause.

    The payload holds ids only (a version id, a document id), never patient data: the
    table is read by operators through `medvault jobs show`.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: the oldest ready job whose time has come.
        Index("ix_jobs_claim", "state", "run_after"),
        # Expired leases are found by this one.
        Index("ix_jobs_lease", "state", "lease_expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    # Enqueueing the same work twice (a retried request, a rescan) makes one job.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.READY)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime)
    # A fresh token per claim: a worker whose lease expired cannot finish a job that
    # another worker has since claimed, because its token no longer matches.
    lease_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Exception class and a redacted message only: no document content, no patient data.
    last_error: Mapped[str | None] = mapped_column(String(500))
    # Progress for long jobs ("verify now"): a small JSON object the portal shows.
    progress: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkerBeat(ClinicalBase):
    """A running worker's last sign of life: `/readyz` and `medvault jobs` read it.

    A backed-up queue with no recent beat means jobs are piling up with nobody to run
    them, which readiness reports instead of letting scans silently stall.
    """

    __tablename__ = "job_workers"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The job it runs right now, for operators; None when idle.
    current_job: Mapped[uuid.UUID | None] = mapped_column(Uuid)
