"""The audit log page's filters, as an auditor types them and as a view keeps them.

An auditor asks about people, not ids: "Alicia Ownfamily", "943 476 5919", "dr.patel".
The posted form is resolved here, server-side, to a patient id and an actor id (a name
matching several patients asks which one), and the resolved filters are kept behind a
view id (``web.list_views``), so no name or identifier ever sits in a URL.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy.orm import Session

from medvault.audit import patient_lookup
from medvault.audit.context import AuditContext
from medvault.audit.patient_lookup import PatientRef
from medvault.audit.repository import EventFilters
from medvault.auth import repository as auth_repository
from medvault.auth.principal import Principal, PrincipalKind
from medvault.kit.i18n import gettext as _
from medvault.kit.i18n import ngettext
from medvault.runtime import Runtime

MAX_TEXT = 200


@dataclass
class AuditFilterState:
    """What the form shows and what the query uses; JSON-safe, for a session view."""

    patient_id: str = ""
    patient_label: str = ""
    actor_id: str = ""
    actor_text: str = ""
    action: str = ""
    occurred_from: str = ""
    occurred_to: str = ""
    emergency_only: bool = False
    hide_mine: bool = False

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AuditFilterState | None:
        try:
            return cls(**state)
        except TypeError:
            return None  # kept by an older release with other fields

    @property
    def filtered(self) -> bool:
        return any(
            (
                self.patient_id,
                self.actor_id,
                self.action,
                self.occurred_from,
                self.occurred_to,
                self.emergency_only,
                self.hide_mine,
            )
        )

    def event_filters(self, principal: Principal, zone: tzinfo) -> EventFilters:
        """The filters for the audit queries; typed dates are days in the viewer's ``zone``."""

        def day_start(raw: str, plus_days: int = 0) -> datetime | None:
            if not raw:
                return None
            day = date.fromisoformat(raw) + timedelta(days=plus_days)
            return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)

        return EventFilters(
            patient_id=uuid.UUID(self.patient_id) if self.patient_id else None,
            actor_id=self.actor_id or None,
            action=self.action or None,
            occurred_after=day_start(self.occurred_from),
            # "To 3 March" includes all of 3 March.
            occurred_before=day_start(self.occurred_to, plus_days=1),
            emergency_only=self.emergency_only,
            excluded_actor_id=principal.actor_id if self.hide_mine else None,
        )


@dataclass
class Resolved:
    state: AuditFilterState
    errors: list[str] = field(default_factory=list)
    # When the patient text matched several patients: which one did they mean?
    choices: list[PatientRef] = field(default_factory=list)


def _date(raw: str, error: str, errors: list[str]) -> str:
    """The typed day as ISO, or "" with ``error`` (already in the reader's language) noted."""
    if not raw:
        return ""
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        errors.append(error)
        return ""


def _actor(runtime: Runtime, text: str, errors: list[str]) -> str:
    """A username, or an actor id as the log writes it ("user:…", "api_token:…")."""
    if not text:
        return ""
    if ":" in text:
        return text
    with runtime.auth.read_session() as auth_session:
        user = auth_repository.user_by_username(auth_session, text)
    if user is None:
        errors.append(_("No user is called “%(name)s”.", name=text))
        return ""
    return f"{PrincipalKind.USER.value}:{user.id}"


def resolve(
    form: dict[str, str],
    *,
    runtime: Runtime,
    session: Session,
    principal: Principal,
    context: AuditContext,
) -> Resolved:
    """The posted form, with its people resolved to ids (or errors saying why not)."""

    def text(name: str) -> str:
        return " ".join(form.get(name, "").split())[:MAX_TEXT]

    errors: list[str] = []
    state = AuditFilterState(
        action=text("action")[:64],
        actor_text=text("actor"),
        occurred_from=_date(text("from"), _("The 'from' date is not a date."), errors),
        occurred_to=_date(text("to"), _("The 'to' date is not a date."), errors),
        emergency_only=bool(form.get("emergency_only")),
        hide_mine=bool(form.get("hide_mine")),
    )
    if state.occurred_from and state.occurred_to and state.occurred_from > state.occurred_to:
        errors.append(_("The 'from' date is after the 'to' date."))
    state.actor_id = _actor(runtime, state.actor_text, errors)
    patient = text("patient")
    choices: list[PatientRef] = []
    if patient:
        try:
            labels = patient_lookup.names(
                session=session, principal=principal, patient_ids=[uuid.UUID(patient)]
            )
            matches = [PatientRef(id=key, label=label) for key, label in labels.items()]
        except ValueError:
            matches = patient_lookup.find(
                session=session, principal=principal, context=context, text=patient
            )
        if not matches:
            errors.append(_("No patient matches “%(text)s”.", text=patient))
        elif len(matches) > 1:
            choices = matches
            errors.append(
                ngettext(
                    "%(num)s patient matches “%(text)s”: choose one below.",
                    "%(num)s patients match “%(text)s”: choose one below.",
                    len(matches),
                    text=patient,
                )
            )
        else:
            state.patient_id, state.patient_label = str(matches[0].id), matches[0].label
    return Resolved(state=state, errors=errors, choices=choices)
