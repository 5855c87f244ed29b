"""Auth and user API shapes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from medvault.auth.models import User
from medvault.kit.text import CleanTextModel

UserRole = Literal["admin", "clinician", "patient", "auditor"]
# Generous: refresh tokens are ~47 characters; anything much longer is not one.
RefreshTokenText = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class TokenResponse(BaseModel):
    """RFC 6749 section 5.1, plus the rotating refresh token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  (the OAuth2 token type, not a secret)
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str


class RefreshRequest(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: RefreshTokenText


class LogoutRequest(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: RefreshTokenText | None = None


class MeOut(BaseModel):
    kind: Literal["user", "api_token", "signed_url"]
    id: uuid.UUID
    role: str
    username: str | None = Field(default=None, description="Users only")
    patient_id: uuid.UUID | None = Field(default=None, description="Patient users only")
    token_name: str | None = Field(default=None, description="API tokens only")
    scopes: list[str] = Field(default_factory=list, description="API tokens only")


class UserCreate(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, StringConstraints(min_length=3, max_length=64)]
    email: Annotated[str, StringConstraints(min_length=3, max_length=255)]
    # SecretStr: never echoed by repr, logs or validation errors.
    password: SecretStr
    role: UserRole
    patient_id: uuid.UUID | None = None
    # What people read instead of the username ("Dr Priya Patel", "GP").
    display_name: Annotated[str, StringConstraints(max_length=100)] | None = None
    profession: Annotated[str, StringConstraints(max_length=100)] | None = None


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    email: str
    role: str
    patient_id: uuid.UUID | None
    display_name: str | None
    profession: str | None
    created_at: datetime
    disabled_at: datetime | None
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            role=user.role,
            patient_id=user.patient_id,
            display_name=user.display_name,
            profession=user.profession,
            created_at=user.created_at,
            disabled_at=user.disabled_at,
            last_login_at=user.last_login_at,
        )


class UserList(BaseModel):
    items: list[UserOut]
