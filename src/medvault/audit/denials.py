"""Recording refused accesses in the audit log, in a transaction of their own."""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from medvault.access.denials import Denial
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.service import Outcome
from medvault.kit.problems import Problem
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)


def _record(runtime: Runtime, context: AuditContext, denial: Denial, path: str) -> None:
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=context,
            action="access.denied",
            outcome=Outcome.DENIED,
            resource_type=denial.resource_type,
            resource_id=denial.resource_id,
            patient_id=denial.patient_id,
            details={"permission": denial.permission, "path": path},
        )
        session.commit()


async def audit_denial(request: Request, problem: Problem) -> None:
    """Problem observer: write an ``access.denied`` event for refusals that carry one."""
    denial = problem.denial
    if not isinstance(denial, Denial):
        return
    runtime: Runtime = request.app.state.runtime
    context = AuditContext.for_principal(
        denial.principal,
        client_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
    )
    try:
        await run_in_threadpool(_record, runtime, context, denial, request.url.path)
    except Exception:
        # The refusal stands either way; a lost denial event is logged, not hidden.
        logger.exception("could not audit an access denial")
