"""Turning ids into what a person reads: uploader names, patient names, type labels."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.auth import repository as auth_repository
from medvault.auth.principal import Principal, PrincipalKind
from medvault.documents.compose.document_types import DOCUMENT_TYPES
from medvault.patients import repository as patients
from medvault.patients import service as patient_service
from medvault.patients.models import Patient
from medvault.runtime import Runtime

# What the portal calls the document types people meet most; the API accepts any
# LOINC code, and an unlisted one is shown as its code.
TYPE_LABELS: dict[str, str] = {
    "11502-2": "Laboratory report",
    "18748-4": "Diagnostic imaging report",
    "18842-5": "Discharge summary",
    "11488-4": "Consult note",
    "11506-3": "Progress note",
    "57133-1": "Referral note",
    "34108-1": "Outpatient note",
    "60591-5": "Patient summary",
    "28570-0": "Procedure note",
    "51851-4": "Administrative note",
    **{option.code: option.label for option in DOCUMENT_TYPES},
}


def type_label(code: str) -> str:
    return TYPE_LABELS.get(code, f"Type {code}")


def actor_names(runtime: Runtime, actor_ids: Iterable[str]) -> dict[str, str]:
    """ "user:<id>" → the username, "api_token:<id>" → "API token <name>"."""
    users: set[uuid.UUID] = set()
    tokens: set[uuid.UUID] = set()
    for actor in set(actor_ids):
        kind, _, raw = actor.partition(":")
        try:
            subject = uuid.UUID(raw)
        except ValueError:
            continue
        if kind == PrincipalKind.USER.value:
            users.add(subject)
        elif kind == PrincipalKind.API_TOKEN.value:
            tokens.add(subject)
    names: dict[str, str] = {}
    with runtime.auth.read_session() as session:
        for user in auth_repository.users_by_ids(session, users).values():
            names[f"{PrincipalKind.USER.value}:{user.id}"] = user.username
        for token_id in tokens:
            token = auth_repository.token_by_id(session, token_id)
            if token is not None:
                names[f"{PrincipalKind.API_TOKEN.value}:{token.id}"] = f"API token “{token.name}”"
    return names


def actor_name(names: dict[str, str], actor_id: str) -> str:
    if actor_id in names:
        return names[actor_id]
    kind = actor_id.partition(":")[0]
    return {"system": "the vault", "signed_url": "a download link"}.get(kind, "someone removed")


def readable_patients_by_id(
    session: Session, principal: Principal, patient_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Patient]:
    """The patients among ``patient_ids`` the caller may see (the documents' own scope)."""
    return {p.id: p for p in patients.readable_many(session, principal, set(patient_ids))}


def patient_label(patient: Patient | None) -> str:
    if patient is None:
        return ""
    return f"{patient.family_name.upper()}, {patient.given_name}"


def patient_choices(
    session: Session, principal: Principal, context: AuditContext, *, limit: int = 500
) -> list[dict[str, str]]:
    """Patients in the caller's scope for a <select>, by family name (an audited search)."""
    found = patient_service.search(
        session=session,
        principal=principal,
        identifier=None,
        limit=limit,
        cursor=None,
        context=context,
    )
    ordered = sorted(found.items, key=lambda p: (p.family_name.lower(), p.given_name.lower()))
    return [
        {
            "id": str(p.id),
            "label": f"{p.family_name.upper()}, {p.given_name} ({p.identifier.value})",
        }
        for p in ordered
    ]
