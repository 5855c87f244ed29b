"""Refused attempts on a patient's record, carried on the refusing problem to be audited.

A refusal must be recorded even though the request fails, so it cannot ride in the
request's own transaction (which rolls back); ``audit.denials`` writes it apart, after
the rollback, in a transaction of its own.

Two kinds of refusal are recorded:

* an **access denial** (``access.denied``, outcome ``denied``): the policy said no —
  wrong role, a record out of reach, a patient changing a staff-authored document;
* a **failed attempt** (the attempted action, e.g. ``document.create``, outcome
  ``failure``): the caller reaches the record, but the request was refused anyway — a
  duplicate upload, content of a deleted document, an upload that failed its checks.

Either way the client's answer is unchanged: only the audit log learns more.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from medvault.audit.context import AuditContext
from medvault.auth.principal import Principal
from medvault.kit.problems import Problem

DENIED_ACTION = "access.denied"
DENIED = "denied"
FAILURE = "failure"


@dataclass(frozen=True)
class Denial:
    # None only with ``context`` set: a caller without a principal (a signed link).
    principal: Principal | None
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    permission: str | None = None
    action: str = DENIED_ACTION
    outcome: str = DENIED
    # Who the event names when there is no principal; the request fills in the rest.
    context: AuditContext | None = None


def denied(problem: Problem, denial: Denial) -> Problem:
    problem.denial = denial
    return problem


def failed_attempt(
    principal: Principal | None,
    action: str,
    *,
    resource_type: str,
    resource_id: uuid.UUID | None,
    patient_id: uuid.UUID,
    context: AuditContext | None = None,
) -> Denial:
    """A refused attempt by a caller who does reach the record (outcome ``failure``)."""
    return Denial(
        principal,
        resource_type,
        resource_id,
        patient_id,
        action=action,
        outcome=FAILURE,
        context=context,
    )


def record_unless_audited(problem: Problem, denial: Denial) -> Problem:
    """Attach ``denial`` unless the problem already carries its own (more precise) one."""
    if problem.denial is None:
        problem.denial = denial
    return problem


@contextmanager
def audited_attempt(denial: Denial) -> Iterator[None]:
    """Every problem raised inside is audited as ``denial`` (unless it carries its own).

    For the stretch of a use case where the patient's record is known: whatever refuses
    the request from there on, the attempt is in the audit log.
    """
    try:
        yield
    except Problem as problem:
        record_unless_audited(problem, denial)
        raise
