"""Who is calling. Every access decision and audit event starts from a Principal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    CLINICIAN = "clinician"
    PATIENT = "patient"
    AUDITOR = "auditor"
    SERVICE = "service"


class PrincipalKind(StrEnum):
    API_TOKEN = "api_token"  # noqa: S105  (a kind of principal, not a secret)
    USER = "user"
    SIGNED_URL = "signed_url"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``patient_id`` is set for patient users (their own record); ``scopes`` narrow
    what a service account may do. Both are carried now so the access policy can
    grow per-patient scoping without changing every call site.
    """

    kind: PrincipalKind
    subject_id: uuid.UUID
    name: str
    role: Role
    scopes: frozenset[str] = field(default_factory=frozenset)
    patient_id: uuid.UUID | None = None
    # Set for one request when a clinician (or an admin, for content) declares an
    # emergency; the access policy widens and every audit event carries the reason.
    break_glass_reason: str | None = None
    # The login session (refresh-token family) an access token belongs to: logout
    # revokes exactly this session. None for API tokens and signed URLs.
    session_id: uuid.UUID | None = None
    # How people see a user ("Dr Priya Patel, GP"); None for tokens and signed URLs.
    # ``name`` stays the username: APIs and logs speak of accounts, pages of people.
    label: str | None = None

    @property
    def shown_name(self) -> str:
        return self.label or self.name

    @property
    def actor_id(self) -> str:
        """Stable identifier for audit trails; never a secret, never a person's name."""
        return f"{self.kind.value}:{self.subject_id}"
