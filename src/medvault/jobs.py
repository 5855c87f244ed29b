"""Wiring: which job kinds exist and which handler runs each (like ``models_registry``).

Handlers live with their domain (scanning and the reconciler in ``processing``, FHIR's
hash and drafts in ``fhir``, audit verification in ``audit``); this module only binds
them to a runtime. ``medvault worker`` and the worker thread in ``medvault serve``
build their registry here, so every worker runs the same kinds.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

from medvault.audit.verify_job import run_verify_job
from medvault.fhir.bulk.expiry import expire_exports
from medvault.fhir.bulk.job import run_export
from medvault.fhir.drafts import expire_drafts
from medvault.fhir.export_bundle import make_bundle
from medvault.fhir.hashing import run_sha1_job
from medvault.governance import appraisal, destruction, exports
from medvault.processing import kinds
from medvault.processing.clamd import ClamdClient
from medvault.processing.derivation import run_preview_job, run_text_job
from medvault.processing.monitoring import observe
from medvault.processing.reconcile import reconcile, record_report
from medvault.processing.scan import run_scan
from medvault.processing.scrub import RUN_EVERY, scrub
from medvault.processing.worker import JobContext, JobKind, JobRegistry, Worker
from medvault.runtime import Runtime
from medvault.search import index as search_index

logger = logging.getLogger("medvault.processing")

# Shutdown waits this long for the current job (a scan of a large file, say) to finish.
STOP_TIMEOUT_SECONDS = 30.0
# A scan streams the whole file to clamd: the lease must outlast the slowest scan
# between two heartbeats (a third of the lease), and heartbeats run beside it anyway.
SCAN_LEASE = timedelta(minutes=5)
# Expiring drafts is cheap; checking hourly keeps a draft at most an hour past its TTL.
DRAFT_EXPIRY_EVERY = timedelta(hours=1)


def scanner_for(runtime: Runtime) -> ClamdClient | None:
    settings = runtime.settings
    if settings.clamd_url is None:
        return None
    return ClamdClient(settings.clamd_url, timeout=settings.clamd_timeout_seconds)


def build_registry(runtime: Runtime) -> JobRegistry:
    settings = runtime.settings
    registry = JobRegistry()
    scanner = scanner_for(runtime)
    if scanner is not None:
        # Without a scanner, scan jobs wait (visible in `medvault jobs list`) until a
        # worker that has one claims them.
        registry.register(
            JobKind(
                kinds.SCAN,
                lambda job: run_scan(runtime, scanner, job.payload, lambda: job.stopping),
                lease=SCAN_LEASE,
            )
        )
    registry.register(JobKind(kinds.FHIR_SHA1, lambda job: run_sha1_job(runtime, job.payload)))

    def reconcile_job(job: JobContext) -> dict[str, Any]:
        report = reconcile(runtime, grace_seconds=settings.reconcile_grace_seconds)
        record_report(runtime, report, actor="reconciler")
        return dict(report.summary())

    registry.register(
        JobKind(
            kinds.RECONCILE,
            reconcile_job,
            lease=timedelta(minutes=5),
            every=timedelta(seconds=settings.reconcile_interval_seconds),
        )
    )

    def expire_job(job: JobContext) -> dict[str, Any]:
        report = expire_drafts(runtime, ttl_seconds=settings.binary_draft_ttl_seconds)
        return {"expired": report.expired}

    registry.register(JobKind(kinds.FHIR_DRAFT_EXPIRY, expire_job, every=DRAFT_EXPIRY_EVERY))
    # FHIR Bulk Data: each export as its requester (resolved again when it runs); hourly expiry.
    registry.register(
        JobKind(
            kinds.FHIR_BULK_EXPORT,
            lambda job: run_export(
                runtime, uuid.UUID(str(job.payload["export_id"])), lambda: job.stopping
            ),
            lease=timedelta(minutes=5),
        )
    )
    registry.register(
        JobKind(
            kinds.FHIR_BULK_EXPORT_EXPIRY,
            lambda job: expire_exports(
                runtime, grace_seconds=settings.reconcile_grace_seconds
            ).summary(),
            every=DRAFT_EXPIRY_EVERY,
        )
    )

    def scrub_job(job: JobContext) -> dict[str, Any]:
        # Most of the interval, so one run ends before the next is due.
        report = scrub(runtime, time_slice=RUN_EVERY * 0.9, wait=job.wait)
        return dict(report.summary())

    registry.register(JobKind(kinds.INTEGRITY_SCRUB, scrub_job, every=RUN_EVERY))

    def verify_job(job: JobContext) -> dict[str, Any]:
        return run_verify_job(
            runtime, job.payload, lambda done, total: job.progress(done=done, total=total)
        )

    # Its attempts are set where it is enqueued (verify_job.MAX_ATTEMPTS).
    registry.register(JobKind(kinds.AUDIT_VERIFY, verify_job))

    # Parsing runs in a confined child with its own time limit; heartbeats keep the
    # lease alive meanwhile, and the lease outlasts the limit if the worker dies.
    derive_lease = timedelta(seconds=max(300.0, 2 * settings.derive_timeout_seconds))
    registry.register(
        JobKind(
            kinds.PREVIEW, lambda job: run_preview_job(runtime, job.payload), lease=derive_lease
        )
    )
    registry.register(
        JobKind(kinds.TEXT, lambda job: run_text_job(runtime, job.payload), lease=derive_lease)
    )

    def index_job(job: JobContext) -> dict[str, Any]:
        document_id = uuid.UUID(str(job.payload["document_id"]))
        with runtime.clinical.session() as session:
            search_index.index_document(session, runtime, document_id)
            session.commit()
        return {"outcome": "indexed"}

    registry.register(JobKind(kinds.SEARCH_INDEX, index_job))

    def reindex_job(job: JobContext) -> dict[str, Any]:
        done = search_index.reindex_all(
            runtime, progress=lambda done, total: job.progress(done=done, total=total)
        )
        return {"documents": done}

    registry.register(JobKind(kinds.SEARCH_REINDEX, reindex_job, lease=timedelta(minutes=10)))
    _register_governance(registry, runtime)
    return registry


def _register_governance(registry: JobRegistry, runtime: Runtime) -> None:
    def appraisal_job(job: JobContext) -> dict[str, Any]:
        return appraisal.run(runtime).summary()

    registry.register(
        JobKind(
            kinds.APPRAISAL,
            appraisal_job,
            lease=timedelta(minutes=10),
            every=timedelta(seconds=runtime.settings.appraisal_interval_seconds),
        )
    )

    def destroy_job(job: JobContext) -> dict[str, Any]:
        return destruction.destroy(runtime, uuid.UUID(str(job.payload["appraisal_id"]))).summary()

    registry.register(JobKind(kinds.DESTROY, destroy_job, lease=timedelta(minutes=10)))

    def export_job(job: JobContext) -> dict[str, Any]:
        export_id = uuid.UUID(str(job.payload["export_id"]))
        return exports.run(runtime, export_id, make_bundle)

    # A patient's whole record: long for a big one; heartbeats keep the lease.
    registry.register(JobKind(kinds.PATIENT_EXPORT, export_job, lease=timedelta(minutes=30)))
    registry.register(
        JobKind(
            kinds.EXPORT_EXPIRY,
            lambda job: {"expired": exports.expire(runtime)},
            every=timedelta(minutes=15),
        )
    )


def build_worker(runtime: Runtime, *, owner: str | None = None) -> Worker:
    return Worker(
        runtime.clinical,
        build_registry(runtime),
        owner=owner,
        poll_interval=runtime.settings.worker_poll_seconds,
        observe=observe,
    )


class WorkerThread:
    """One worker on a thread of this process: ``medvault serve``'s embedded worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._thread = threading.Thread(target=worker.run, name="medvault-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask the worker to stop, and wait for its current job to finish or be released."""
        self.worker.stop_event.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Its lease expires and another worker takes the job: nothing is lost.
            logger.warning("the job worker did not stop within %.0f s", timeout)


def start_worker(runtime: Runtime) -> WorkerThread:
    thread = WorkerThread(build_worker(runtime))
    thread.start()
    return thread
