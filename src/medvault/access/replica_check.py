"""May this caller's reads come from the replica? Only if it agrees on their authorisation.

A replica is a little behind the primary. For a list of documents that is harmless,
but not for the rows that decide *who may see what*: a clinician removed from a care
team a moment ago must not go on seeing that patient's records through a replica that
has not replayed the removal yet. Tokens, users and sessions live in the auth database,
which is always read from its primary; the one piece of authorisation kept in the
clinical database is care-team membership, which ``patient_scope`` joins into every
clinician's query. So, for a clinician, the replica may answer only when its
care-team rows for them are exactly the primary's; otherwise (a revocation, or a new
assignment, still in flight) the primary answers.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.access.models import CareTeamMember
from medvault.access.policy import reaches_every_patient
from medvault.auth.principal import Principal, Role

# Runs on a primary session and a replica session; False keeps the reads on the primary.
ReplicaCheck = Callable[[Session, Session], bool]


def replica_check(principal: Principal) -> ReplicaCheck | None:
    """The check the replica must pass before it answers for ``principal`` (None: none needed)."""
    if principal.role is not Role.CLINICIAN or reaches_every_patient(principal):
        # Every other scope is decided by the principal alone (its role, its patient,
        # its token's scopes), read from the auth database's primary.
        return None
    query = (
        select(CareTeamMember.patient_id)
        .where(CareTeamMember.clinician_id == principal.subject_id)
        .order_by(CareTeamMember.patient_id)
    )

    def same_care_teams(primary: Session, replica: Session) -> bool:
        return list(primary.scalars(query)) == list(replica.scalars(query))

    return same_care_teams
