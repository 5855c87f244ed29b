"""Who reads which audit events: the whole log, one patient's record, or nothing.

The audit log holds every patient's events, and each event names its actor, their
client address and user agent, request ids and free-text reasons. So reading it is
decided here, like every other read, and every audit-event query (the REST audit API,
a patient's access history, FHIR ``AuditEvent`` search and read, the portal's pages)
starts from :func:`readable_audit_events`:

* **the whole log** — auditors, and API tokens holding ``audit:read`` (as a permission
  name, ``*``, or a ``user/`` or ``system/`` ``AuditEvent`` scope) with no ``patient/``
  scope. Only they read the full representation, checkpoints and proofs: a signed
  checkpoint and a proof reveal the size and shape of everyone's log.
* **their own record** — a patient principal: a portal patient user, or an API token
  whose ``patient/`` scopes bind it to its owner's patient (and that grant
  ``AuditEvent`` reading: ``patient/AuditEvent.read``, ``patient/*.read``…). They read
  the events *about* their record (``patient_id`` is theirs), and only in the reduced,
  patient-facing projection (no addresses, user agents, usernames or reasons).
  This is the patient's accounting of disclosures (HIPAA) and right of access (GDPR
  Art. 15).
* **nothing** — a ``patient/`` token with no patient in context (no user, or a user
  without a patient record), and a patient user without a record: they may search but
  find nothing, exactly as for documents.
* everyone else (clinicians, admins, tokens without an audit scope) is refused (403).
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import Select, false, select, true

from medvault.access import smart_scopes
from medvault.access.denials import Denial, denied
from medvault.audit.models import AuditEvent
from medvault.auth.principal import Principal, Role
from medvault.kit.i18n import N_
from medvault.kit.problems import Forbidden, Problem

AUDIT_READ = "audit:read"  # access.policy.Permission.AUDIT_READ


class AuditReach(StrEnum):
    WHOLE_LOG = "whole-log"
    OWN_RECORD = "own-record"
    NOTHING = "nothing"  # may ask, finds nothing (an unbound patient/ token)
    REFUSED = "refused"  # may not read audit events at all


def audit_reach(principal: Principal) -> AuditReach:
    """How far ``principal`` reads the audit log (see the module docstring)."""
    role = principal.role
    if role is Role.AUDITOR:
        return AuditReach.WHOLE_LOG
    if role is Role.PATIENT:
        return AuditReach.OWN_RECORD if principal.patient_id is not None else AuditReach.NOTHING
    if role is not Role.SERVICE:
        return AuditReach.REFUSED
    scopes = principal.scopes
    granted = (
        "*" in scopes or AUDIT_READ in scopes or AUDIT_READ in smart_scopes.permissions(scopes)
    )
    if not granted:
        return AuditReach.REFUSED
    if smart_scopes.patient_bound(scopes):
        # One patient/ scope narrows the whole token, whatever else it carries.
        return AuditReach.OWN_RECORD if principal.patient_id is not None else AuditReach.NOTHING
    return AuditReach.WHOLE_LOG


def reads_whole_log(principal: Principal) -> bool:
    return audit_reach(principal) is AuditReach.WHOLE_LOG


def reads_as_patient(principal: Principal) -> bool:
    """Whether answers to ``principal`` take the patient-facing projection."""
    return audit_reach(principal) in (AuditReach.OWN_RECORD, AuditReach.NOTHING)


def _refusal(principal: Principal, message: str) -> Problem:
    return denied(Forbidden(message), Denial(principal, permission=AUDIT_READ))


def require_audit_events(principal: Principal) -> AuditReach:
    """Refuse (403, audited) a caller who may not read any audit event; else its reach."""
    reach = audit_reach(principal)
    if reach is AuditReach.REFUSED:
        raise _refusal(principal, N_("Your role may not read the audit log."))
    return reach


def require_whole_log(principal: Principal) -> None:
    """Refuse (403, audited) anyone but a whole-log reader: the auditor's API and proofs."""
    reach = require_audit_events(principal)
    if reach is not AuditReach.WHOLE_LOG:
        raise _refusal(
            principal,
            N_(
                "Only auditors read the whole audit log, its checkpoints and proofs; a patient "
                "reads the events about their own record at "
                "/api/v1/patients/{patient_id}/access-history or /fhir/AuditEvent."
            ),
        )


def readable_audit_events(principal: Principal) -> Select[AuditEvent]:
    """The base query for every audit-event lookup and listing done for ``principal``."""
    reach = audit_reach(principal)
    if reach is AuditReach.WHOLE_LOG:
        return select(AuditEvent).where(true())
    if reach is AuditReach.OWN_RECORD and principal.patient_id is not None:
        return select(AuditEvent).where(AuditEvent.patient_id == principal.patient_id)
    return select(AuditEvent).where(false())


def own_patient(principal: Principal) -> uuid.UUID | None:
    """The record a patient principal's audit reads are about (None for everyone else)."""
    return principal.patient_id if audit_reach(principal) is AuditReach.OWN_RECORD else None
