"""``medvault previews backfill`` and ``medvault search reindex``: catching up as jobs.

Versions stored before previews and text extraction existed (or while they were off)
have neither. These commands only enqueue: the workers do the parsing, in their
confined children, at their own pace, and ``medvault jobs list`` shows the progress.
Only current versions are backfilled: what search finds and lists show is the current
version; older versions stay downloadable, without a picture.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

import typer

from medvault.cli.console import err, fail, operational_errors, server_runtime

if TYPE_CHECKING:
    from medvault.runtime import Runtime

previews_app = typer.Typer(no_args_is_help=True, help="Previews: thumbnails and page pictures.")
search_app = typer.Typer(no_args_is_help=True, help="The full-text search index.")

BATCH = 500


def queue_for_current_versions(
    runtime: Runtime, *, preview: bool, text: bool, retry_failed: bool
) -> int:
    from sqlalchemy import and_, select

    from medvault.documents.arrival import queue_derivation
    from medvault.documents.models import (
        DeriveState,
        Document,
        DocumentVersion,
        ScanState,
        VersionState,
    )

    wanted = [DeriveState.NONE.value] + ([DeriveState.FAILED.value] if retry_failed else [])
    state_column = DocumentVersion.preview_state if preview else DocumentVersion.text_state
    queued = 0
    after: uuid.UUID | None = None
    with operational_errors():
        while True:
            with runtime.clinical.session() as session:
                query = (
                    select(DocumentVersion)
                    .join(
                        Document,
                        and_(
                            Document.id == DocumentVersion.document_id,
                            Document.current_version == DocumentVersion.version,
                        ),
                    )
                    .where(
                        DocumentVersion.state == VersionState.AVAILABLE,
                        # Parsers only see what the scanner cleared (processing.derivation).
                        DocumentVersion.scan_state.in_(
                            [ScanState.CLEAN, ScanState.RELEASED, ScanState.NOT_SCANNED]
                        ),
                        state_column.in_(wanted),
                    )
                    .order_by(DocumentVersion.id)
                    .limit(BATCH)
                )
                if after is not None:
                    query = query.where(DocumentVersion.id > after)
                batch = list(session.scalars(query))
                for version in batch:
                    after = version.id
                    queue_derivation(session, runtime, version, preview=preview, text=text)
                session.commit()
            queued += len(batch)
            if len(batch) < BATCH:
                return queued


RetryFailed = Annotated[
    bool, typer.Option("--retry-failed", help="Also versions whose last attempt failed")
]


@previews_app.command("backfill")
def backfill_previews(retry_failed: RetryFailed = False) -> None:
    """Queue previews for current versions that have none."""
    runtime = server_runtime(run_migrations=True)
    if not runtime.settings.previews:
        fail("MEDVAULT_PREVIEWS is off: no previews are made.", code=2)
    queued = queue_for_current_versions(
        runtime, preview=True, text=False, retry_failed=retry_failed
    )
    err.print(f"Queued {queued} previews.")


@search_app.command("reindex")
def reindex(
    extract: Annotated[
        bool,
        typer.Option("--extract", help="First queue text extraction for versions without text"),
    ] = False,
    retry_failed: RetryFailed = False,
) -> None:
    """Rebuild the search index as a job (e.g. after turning MEDVAULT_FULLTEXT off)."""
    from medvault.processing import kinds, queue

    runtime = server_runtime(run_migrations=True)
    if extract:
        if not runtime.settings.fulltext:
            fail("MEDVAULT_FULLTEXT is off: no text is extracted.", code=2)
        queued = queue_for_current_versions(
            runtime, preview=False, text=True, retry_failed=retry_failed
        )
        err.print(f"Queued text extraction for {queued} versions.")
    with operational_errors(), runtime.clinical.session() as session:
        job = queue.enqueue(session, kinds.SEARCH_REINDEX, {}, dedupe_key=kinds.SEARCH_REINDEX)
        session.commit()
        err.print(f"Queued the reindex as job {job.id}.")
