"""The one access policy: who may do what, to which patients' records.

Two questions, answered only here:

* **may** this caller do this kind of thing at all (``require``)? — by role, or by
  scope for service accounts;
* **which** patients' records does it reach (``patient_scope``)? — every document and
  patient query is built from ``readable_documents``/``readable_patients``, so an
  unscoped query has to be written on purpose. Demographics live in their own
  database, apart from the care teams that decide the scope: a patient query first
  resolves the caller's scope in the clinical database (``resolve_patient_scope``:
  every patient, or a bounded set of ids), and ``readable_patients`` takes only that.

A third, who may *change* a document already stored (add a version, edit, delete), is
answered next door in ``access.authorship``: patients change only their own uploads.

Roles:

* ``service`` (API tokens): what its scopes say, for every patient; SMART scopes
  (``user/*.read``…) map onto the same permissions, and ``patient/…`` scopes narrow
  the token to its own patient (see ``access.smart_scopes``).
* ``admin``: manages users, patients and care teams; sees document metadata for every
  patient, but content only through break-glass.
* ``clinician``: reads and writes the records of patients on their care teams (and
  registers new patients, joining their care team); any
  other patient only through break-glass (a stated reason, flagged in the audit log).
* ``patient``: their own record only; may upload to it unless self-upload is off.
* ``auditor``: the audit log, and nothing clinical.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, Select, exists, false, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from medvault.access import smart_scopes
from medvault.access.denials import Denial, denied
from medvault.access.models import CareTeamMember
from medvault.auth.principal import Principal, Role
from medvault.documents.models import Document
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import Forbidden
from medvault.patients.models import Patient, PatientRef


class Permission(StrEnum):
    PATIENT_READ = "patients:read"
    PATIENT_WRITE = "patients:write"
    DOCUMENT_READ = "documents:read"
    DOCUMENT_WRITE = "documents:write"
    DOCUMENT_DELETE = "documents:delete"
    CONTENT_READ = "documents:content"
    AUDIT_READ = "audit:read"
    USERS_ADMIN = "users:admin"
    METRICS_READ = "ops:metrics"
    # Release or destroy what the malware scanner quarantined (documents.quarantine).
    QUARANTINE_ADMIN = "documents:quarantine"
    # Records governance: legal holds, appraisal, approving destruction (governance/).
    RECORDS_GOVERN = "records:govern"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(
        {
            P.PATIENT_READ,
            P.PATIENT_WRITE,
            P.DOCUMENT_READ,
            P.DOCUMENT_DELETE,
            P.USERS_ADMIN,
            P.METRICS_READ,
            P.QUARANTINE_ADMIN,
            P.RECORDS_GOVERN,
        }
    ),
    # A clinician may register a new patient (a walk-in, a referral) and joins that
    # patient's care team by doing so; everyone else's records stay out of reach.
    Role.CLINICIAN: frozenset(
        {
            P.PATIENT_READ,
            P.PATIENT_WRITE,
            P.DOCUMENT_READ,
            P.DOCUMENT_WRITE,
            P.DOCUMENT_DELETE,
            P.CONTENT_READ,
        }
    ),
    Role.PATIENT: frozenset({P.PATIENT_READ, P.DOCUMENT_READ, P.CONTENT_READ, P.DOCUMENT_WRITE}),
    Role.AUDITOR: frozenset({P.AUDIT_READ}),
    Role.SERVICE: frozenset(),  # decided by the token's scopes
}
# What a role gains only while it declares break-glass.
BREAK_GLASS_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({P.CONTENT_READ}),
}
BREAK_GLASS_ROLES = frozenset({Role.CLINICIAN, Role.ADMIN})


def allows(principal: Principal, permission: Permission) -> bool:
    if principal.role is Role.SERVICE:
        return (
            "*" in principal.scopes
            or permission.value in principal.scopes
            or permission.value in smart_scopes.permissions(principal.scopes)
        )
    if permission in ROLE_PERMISSIONS.get(principal.role, frozenset()):
        return True
    return bool(principal.break_glass_reason) and permission in BREAK_GLASS_PERMISSIONS.get(
        principal.role, frozenset()
    )


def require(principal: Principal, permission: Permission) -> None:
    if allows(principal, permission):
        return
    if permission in BREAK_GLASS_PERMISSIONS.get(principal.role, frozenset()):
        problem = Forbidden(
            N_(
                "Document content needs break-glass: repeat the request with an "
                "X-Break-Glass-Reason header."
            ),
            needs_break_glass=True,
        )
    else:
        # The permission is named by its code ("documents read"), which stays as it is.
        problem = Forbidden(
            msg("Your role may not {action}.", action=permission.value.replace(":", " "))
        )
    raise denied(problem, Denial(principal, permission=permission.value))


def require_upload(principal: Principal, *, patient_self_upload: bool) -> None:
    require(principal, Permission.DOCUMENT_WRITE)
    if principal.role is Role.PATIENT and not patient_self_upload:
        problem = Forbidden(N_("Patients may not upload documents on this vault."))
        raise denied(problem, Denial(principal, permission=Permission.DOCUMENT_WRITE.value))


def can_break_glass(principal: Principal) -> bool:
    return principal.role in BREAK_GLASS_ROLES


def reaches_every_patient(principal: Principal) -> bool:
    """Whether the caller's scope is all patients (so no per-patient check is needed)."""
    role = principal.role
    if role is Role.SERVICE:
        # A patient/ SMART scope binds the whole token to its own patient.
        return not smart_scopes.patient_bound(principal.scopes)
    return role is Role.ADMIN or (role is Role.CLINICIAN and bool(principal.break_glass_reason))


def patient_scope(
    principal: Principal, patient_column: InstrumentedAttribute[uuid.UUID]
) -> ColumnElement[bool]:
    """A filter on ``patient_column`` to the patients whose records ``principal`` reaches."""
    if reaches_every_patient(principal):
        return true()
    role = principal.role
    if role is Role.CLINICIAN:
        return patient_column.in_(
            select(CareTeamMember.patient_id).where(
                CareTeamMember.clinician_id == principal.subject_id
            )
        )
    if role in (Role.PATIENT, Role.SERVICE) and principal.patient_id is not None:
        # Patient users, and API tokens bound to their owner's patient by patient/ scopes.
        return patient_column == principal.patient_id
    return false()


def readable_documents(principal: Principal) -> Select[Document]:
    """The base query for every document lookup and listing done for ``principal``."""
    if not allows(principal, Permission.DOCUMENT_READ):
        return select(Document).where(false())
    return select(Document).where(patient_scope(principal, Document.patient_id))


@dataclass(frozen=True)
class PatientScope:
    """The patients a caller reaches, resolved in the clinical database.

    Either every patient, or a bounded set of ids: a clinician's care teams, a
    patient's own record. Only ``resolve_patient_scope`` makes one, and the patient
    database is queried only through one (``readable_patients``).
    """

    every: bool
    ids: frozenset[uuid.UUID]

    def where(self, patient_column: InstrumentedAttribute[uuid.UUID]) -> ColumnElement[bool]:
        if self.every:
            return true()
        if not self.ids:
            return false()
        return patient_column.in_(sorted(self.ids))

    def reaches(self, patient_id: uuid.UUID) -> bool:
        return self.every or patient_id in self.ids


def resolve_patient_scope(
    session: Session, principal: Principal, among: Iterable[uuid.UUID] | None = None
) -> PatientScope:
    """Which patients ``principal`` may look up: one clinical query, at most.

    ``among``: only these patients are wanted (the patients of a page of documents),
    so a clinician's scope is not listed in full for them.
    """
    if not allows(principal, Permission.PATIENT_READ):
        return PatientScope(every=False, ids=frozenset())
    if reaches_every_patient(principal):
        return PatientScope(every=True, ids=frozenset())
    if principal.role in (Role.PATIENT, Role.SERVICE) and principal.patient_id is not None:
        return PatientScope(every=False, ids=frozenset({principal.patient_id}))
    query = select(PatientRef.id).where(patient_scope(principal, PatientRef.id))
    if among is not None:
        query = query.where(PatientRef.id.in_(sorted(set(among))))
    return PatientScope(every=False, ids=frozenset(session.scalars(query)))


def readable_patients(scope: PatientScope) -> Select[Patient]:
    """The base query for every patient lookup and search (in the patient database)."""
    return select(Patient).where(scope.where(Patient.id))


def reaches_patient(session: Session, principal: Principal, patient_id: uuid.UUID) -> bool:
    """Whether ``principal`` may act on this patient's record (False also if it doesn't exist)."""
    if not allows(principal, Permission.PATIENT_READ):
        return False
    if not reaches_every_patient(principal):
        in_scope = select(PatientRef.id).where(
            PatientRef.id == patient_id, patient_scope(principal, PatientRef.id)
        )
        if not session.scalar(select(exists(in_scope.subquery()))):
            return False
    # The demographics, not only the clinical reference: a registration interrupted
    # between its two commits leaves a reference with no patient behind it.
    return session.get(Patient, patient_id) is not None
