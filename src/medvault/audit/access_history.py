"""A patient's access history: who did what with their record, in words a patient reads.

This is the patient-facing projection of the audit log (HIPAA accounting of
disclosures, GDPR Art. 15). Patients have a right to know *who* opened their record,
*what* they did, *when*, whether it worked, and whether it was emergency access. They
do not get what belongs to other people: staff members' client addresses, user
agents, request ids, internal actor ids and usernames, and the free-text details and
break-glass reasons, which may mention other patients. Staff are named as their
badge would name them, the display name an admin set and their role ("Dr Priya Patel,
GP (a clinician)"), or by their role alone ("a clinician") when they have none;
usernames are login identifiers, never shown.

Who may read which events is decided in ``access.audit_reach``; every query here
starts from its ``readable_audit_events``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from medvault.access.audit_reach import readable_audit_events
from medvault.access.policy import readable_documents
from medvault.audit.models import AuditEvent
from medvault.auth import repository as auth_repository
from medvault.auth.models import ApiToken, User
from medvault.auth.principal import Principal, PrincipalKind
from medvault.documents.models import Document
from medvault.kit.i18n import N_, gettext

Outcome = Literal["success", "denied", "failure"]

# A role as a patient reads it ("a clinician opened a document"). Said in the request's
# language: the portal's reader's, or English on the API (web.language).
_ROLE_WORDS = {
    "clinician": N_("a clinician"),
    "admin": N_("an administrator"),
    "auditor": N_("an auditor"),
    "patient": N_("another patient"),
    "service": N_("a service account"),
    "system": N_("the vault"),
}
# Plain words for what happened; anything unlisted is said generically (never blank).
_ACTION_WORDS = {
    "document.read": N_("viewed the details of a document"),
    "document.list": N_("listed documents in your record"),
    "document.content.read": N_("opened a document"),
    "document.versions.read": N_("viewed the versions of a document"),
    "document.create": N_("added a document"),
    "document.update": N_("changed a document"),
    "document.delete": N_("deleted a document"),
    "document.restore": N_("restored a deleted document"),
    "document.download_url.issue": N_("created a download link for a document"),
    "document.download_url.use": N_("downloaded a document through a link"),
    "document.version.integrity_failed": N_("found a damaged copy of a document"),
    "document.version.integrity_restored": N_("repaired a damaged copy of a document"),
    "upload.create": N_("started uploading a document to your record"),
    "upload.append": N_("sent part of a document being uploaded to your record"),
    "upload.status": N_("checked how far an upload to your record has got"),
    "upload.terminate": N_("cancelled an unfinished upload to your record"),
    "upload.expire": N_("discarded an unfinished upload to your record"),
    "patient.read": N_("viewed your record"),
    "patient.search": N_("found your record in a search"),
    "patient.create": N_("registered your record"),
    "careteam.add": N_("added a clinician to your care team"),
    "careteam.remove": N_("removed a clinician from your care team"),
    "audit.read": N_("viewed the access history of your record"),
    "access.denied": N_("was refused access to your record"),
    "user.create": N_("created your portal account"),
    "patient.update": N_("recorded a date of death or an end of treatment in your record"),
    "retention.appraisal.listed": N_("listed a document as past its retention period"),
    "retention.appraisal.kept": N_("decided to keep a document past its retention period"),
    "retention.destruction.approved": N_(
        "approved destroying a document past its retention period"
    ),
    "retention.destruction.blocked": N_("stopped the destruction of a document that is on hold"),
    "document.destroyed": N_("destroyed a document at the end of its retention period"),
    "legal_hold.place": N_("placed a legal hold on your record"),
    "legal_hold.release": N_("released a legal hold on your record"),
    "legal_hold.read": N_("viewed a legal hold on your record"),
    "legal_hold.list": N_("listed the legal holds on your record"),
    "patient.export.request": N_("asked for a copy of everything held about you"),
    "patient.export.read": N_("checked on a copy of your data"),
    "patient.export.build": N_("put together a copy of your data"),
    "patient.export.download": N_("downloaded a copy of your data"),
    "patient.export.expire": N_("deleted an expired copy of your data"),
}


class AccessHistoryEntry(BaseModel):
    """One event about the patient's record, without anything about other people."""

    id: int = Field(description="The event's id (also its FHIR AuditEvent id)")
    occurred_at: datetime
    who: str = Field(
        description='"you", or who acted: "Dr Priya Patel, GP (a clinician)", "a clinician", '
        '"the vault"…'
    )
    is_you: bool = Field(description="The patient themself, or an app acting for them")
    actor_role: str = Field(description="clinician, admin, auditor, patient, service or system")
    action: str = Field(description="The vault's action name, e.g. document.content.read")
    what: str = Field(description="The action in plain words")
    document_id: uuid.UUID | None = Field(description="The document concerned, if any")
    document_title: str | None = Field(
        description="Its title, when the caller may read the document (not for auditors)"
    )
    outcome: Outcome
    emergency: bool = Field(description="Break-glass (emergency) access")


class AccessHistoryPage(BaseModel):
    items: list[AccessHistoryEntry]
    next_cursor: str | None = Field(description="Pass back as `cursor` for older events")


@dataclass(frozen=True)
class Actor:
    """Who an event's actor is, as the patient may be told."""

    who: str
    is_you: bool


def _subject(actor_id: str) -> tuple[str, uuid.UUID | None]:
    kind, _, raw = actor_id.partition(":")
    try:
        return kind, uuid.UUID(raw)
    except ValueError:
        return kind, None


def resolve_actors(
    auth_session: Session, actor_ids: Iterable[str], *, patient_id: uuid.UUID
) -> dict[str, Actor]:
    """Each actor id → how the patient sees it: two batched auth-DB queries, not one a row.

    "You" is whoever acts for ``patient_id``: its patient user, or a token that user owns.
    """
    users: set[uuid.UUID] = set()
    token_ids: set[uuid.UUID] = set()
    for actor in set(actor_ids):
        kind, subject = _subject(actor)
        if subject is None:
            continue
        if kind == PrincipalKind.USER.value:
            users.add(subject)
        elif kind == PrincipalKind.API_TOKEN.value:
            token_ids.add(subject)
    tokens = auth_repository.tokens_by_ids(auth_session, token_ids)
    users |= {token.user_id for token in tokens.values() if token.user_id is not None}
    found = auth_repository.users_by_ids(auth_session, users)
    actors: dict[str, Actor] = {}
    for user in found.values():
        actors[f"{PrincipalKind.USER.value}:{user.id}"] = _user_actor(user, patient_id)
    for token in tokens.values():
        actors[f"{PrincipalKind.API_TOKEN.value}:{token.id}"] = _token_actor(
            token, found.get(token.user_id) if token.user_id else None, patient_id
        )
    return actors


def _role_words(role: str) -> str:
    return gettext(_ROLE_WORDS.get(role, N_("someone")))


def _user_actor(user: User, patient_id: uuid.UUID) -> Actor:
    if user.patient_id == patient_id:
        return Actor(gettext("you"), True)
    role = _role_words(user.role)
    if user.display_name:
        return Actor(gettext("%(name)s (%(role)s)", name=user.label, role=role), False)
    return Actor(role, False)


def _token_actor(token: ApiToken, owner: User | None, patient_id: uuid.UUID) -> Actor:
    if owner is None:
        return Actor(gettext("a service account"), False)
    if owner.patient_id == patient_id:
        return Actor(gettext("you, through an app"), True)
    return Actor(gettext("an app acting for %(role)s", role=_role_words(owner.role)), False)


def actor_for(actors: dict[str, Actor], actor_id: str, actor_role: str) -> Actor:
    """The resolved actor, or a fallback by kind and recorded role (e.g. a removed user)."""
    if actor_id in actors:
        return actors[actor_id]
    kind = actor_id.partition(":")[0]
    if kind == PrincipalKind.SIGNED_URL.value:
        return Actor(gettext("someone with a download link"), False)
    if kind == "system":
        return Actor(gettext("the vault"), False)
    return Actor(_role_words(actor_role), False)


def action_words(action: str) -> str:
    words = _ACTION_WORDS.get(action)
    if words is None:
        return gettext("worked on your record (%(action)s)", action=action)
    return gettext(words)


def entry(
    event: AuditEvent, actors: dict[str, Actor], titles: dict[uuid.UUID, str]
) -> AccessHistoryEntry:
    actor = actor_for(actors, event.actor_id, event.actor_role)
    document_id = None
    if event.resource_type == "Document" and event.resource_id:
        try:
            document_id = uuid.UUID(event.resource_id)
        except ValueError:
            document_id = None
    outcome = event.outcome if event.outcome in ("success", "denied") else "failure"
    return AccessHistoryEntry(
        id=event.id,
        occurred_at=event.occurred_at,
        who=actor.who,
        is_you=actor.is_you,
        actor_role=event.actor_role,
        action=event.action,
        what=action_words(event.action),
        document_id=document_id,
        document_title=titles.get(document_id) if document_id else None,
        outcome=outcome,
        emergency=event.break_glass_reason is not None,
    )


def page_for_patient(
    *,
    session: Session,
    auth_session: Session,
    principal: Principal,
    patient_id: uuid.UUID,
    before_id: int | None,
    limit: int,
) -> AccessHistoryPage:
    """The events about ``patient_id`` that ``principal`` reads, newest first.

    The caller has checked the principal reaches this patient's history; the query
    is still built from ``readable_audit_events``, so it cannot widen by mistake.
    """
    query = readable_audit_events(principal).where(AuditEvent.patient_id == patient_id)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    events: Sequence[AuditEvent] = list(
        session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit))
    )
    actors = resolve_actors(auth_session, (e.actor_id for e in events), patient_id=patient_id)
    titles = _document_titles(session, principal, events)
    next_cursor = str(events[-1].id) if len(events) == limit else None
    return AccessHistoryPage(
        items=[entry(e, actors, titles) for e in events], next_cursor=next_cursor
    )


def _document_titles(
    session: Session, principal: Principal, events: Sequence[AuditEvent]
) -> dict[uuid.UUID, str]:
    """Titles of the documents the events name, through the caller's own document scope."""
    wanted: set[uuid.UUID] = set()
    for event in events:
        if event.resource_type == "Document" and event.resource_id:
            try:
                wanted.add(uuid.UUID(event.resource_id))
            except ValueError:
                continue
    if not wanted:
        return {}
    query = readable_documents(principal).where(Document.id.in_(wanted))
    return {document.id: document.title for document in session.scalars(query)}
