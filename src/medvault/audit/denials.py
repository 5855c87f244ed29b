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
from medvault.kit.redaction import loggable_path
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)


def _record(
    runtime: Runtime, context: AuditContext, denial: Denial, path: str, problem: Problem
) -> None:
    # The problem's type and status say why it was refused; its detail text is left
    # out, as it may one day quote something the client sent.
    details: dict[str, object] = {"permission": denial.permission, "path": path}
    if denial.outcome != Outcome.DENIED:
        details.update(status=problem.status, problem=problem.slug)
    with runtime.clinical.session() as session:
        audit.record(
            session=session,
            context=context,
            action=denial.action,
            outcome=Outcome(denial.outcome),
            resource_type=denial.resource_type,
            resource_id=denial.resource_id,
            patient_id=denial.patient_id,
            details=details,
        )
        session.commit()


async def audit_denial(request: Request, problem: Problem) -> None:
    """Problem observer: audit the refusals that carry a denial (see ``access.denials``)."""
    denial = problem.denial
    if not isinstance(denial, Denial):
        return
    runtime: Runtime = request.app.state.runtime
    if denial.context is not None:
        context = denial.context
    elif denial.principal is not None:
        context = AuditContext.for_principal(
            denial.principal,
            client_ip=request.client.host if request.client else None,
            user_agent=request.headers.get("user-agent"),
            request_id=getattr(request.state, "request_id", None),
        )
    else:  # pragma: no cover - Denial is always built with one of the two
        logger.error("a refusal carried no principal and no audit context")
        return
    try:
        await run_in_threadpool(
            _record, runtime, context, denial, loggable_path(request.url.path), problem
        )
    except Exception:
        # The refusal stands either way; a lost denial event is logged, not hidden.
        logger.exception("could not audit an access denial")
