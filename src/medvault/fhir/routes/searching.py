"""The POST `_search` form shared by every resource's routes (not a router itself).

Routers may not import each other, so the one piece the Patient, DocumentReference and
AuditEvent routes share lives here: read the form-encoded parameters, run the search
in a worker thread inside its own clinical session, commit its audit event, respond.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from medvault.audit import service as audit
from medvault.fhir.wire.http import search_params
from medvault.fhir.wire.responses import fhir_response
from medvault.runtime import Runtime

# Runs one search in the given session with the parsed parameters; returns the Bundle.
Search = Callable[[Session, list[tuple[str, str]]], dict[str, Any]]


async def search_by_post(
    request: Request, runtime: Runtime, media_type: str, run: Search
) -> Response:
    params = await search_params(request)

    def in_session() -> dict[str, Any]:
        with runtime.clinical.session() as session:
            bundle = run(session, params)
            audit.commit_or_refuse(session)
            return bundle

    return fhir_response(await run_in_threadpool(in_session), media_type=media_type)
