"""Access denials, carried on the refusing problem so they can be audited.

A denial must be recorded even though the request fails, so it cannot ride in the
request's own transaction (which rolls back); ``audit.denials`` writes it apart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from medvault.auth.principal import Principal
from medvault.kit.problems import Problem


@dataclass(frozen=True)
class Denial:
    principal: Principal
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    permission: str | None = None


def denied(problem: Problem, denial: Denial) -> Problem:
    problem.denial = denial
    return problem
