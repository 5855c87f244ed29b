"""Recording refused accesses in the audit log, in a transaction of their own.

The HTTP side (the problem observer that reads the request) is in ``audit.router``;
this module takes plain values so that it stays free of the web framework.
"""

from __future__ import annotations

import logging

from medvault.access.denials import Denial
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.service import Outcome
from medvault.kit.problems import Problem
from medvault.runtime import Runtime

logger = logging.getLogger(__name__)


def record_denial(
    *,
    runtime: Runtime,
    denial: Denial,
    problem: Problem,
    path: str,
    client_ip: str | None,
    user_agent: str | None,
    request_id: str | None,
) -> None:
    """Audit ``denial``, the refusal ``problem`` carries, and commit it apart.

    ``path`` must already be safe to store (``kit.redaction.loggable_path``).
    """
    if denial.context is not None:
        context = denial.context
    elif denial.principal is not None:
        context = AuditContext.for_principal(
            denial.principal, client_ip=client_ip, user_agent=user_agent, request_id=request_id
        )
    else:  # pragma: no cover - Denial is always built with one of the two
        logger.error("a refusal carried no principal and no audit context")
        return
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
