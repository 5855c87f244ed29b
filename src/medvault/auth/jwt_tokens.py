"""Access tokens: short-lived JWTs signed with the vault's Ed25519 key (EdDSA).

Any instance holding the public key can check one without a shared session store,
which is what lets instances scale out. What a JWT cannot say by itself (is the user
still enabled, is the session still live?) is checked against the database on every
request by the caller of :func:`decode_access_token`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from medvault.auth.principal import Role
from medvault.crypto.signing_keys import SigningKey

ISSUER = "medvault"
AUDIENCE = "medvault:api"
ALGORITHM = "EdDSA"
# Instances' clocks drift a little; a few seconds is not worth a failed request.
CLOCK_SKEW_SECONDS = 5
_REQUIRED_CLAIMS = ["sub", "role", "sid", "iat", "exp", "jti", "iss", "aud"]


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    role: Role
    patient_id: uuid.UUID | None
    session_id: uuid.UUID
    token_id: str
    # When the decoder stops accepting it: ``exp`` plus the clock-skew leeway. A cached
    # principal for this token must end at exactly this instant too.
    valid_until: datetime


def issue_access_token(
    *,
    key: SigningKey,
    user_id: uuid.UUID,
    role: Role,
    patient_id: uuid.UUID | None,
    session_id: uuid.UUID,
    now: datetime,
    ttl_seconds: int,
) -> str:
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user_id),
        "role": role.value,
        "sid": str(session_id),
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    if patient_id is not None:
        claims["pid"] = str(patient_id)
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.key_id})


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2 and len(value) < 4096


def decode_access_token(*, key: SigningKey, token: str) -> AccessClaims | None:
    """The claims of a genuine, current access token for this vault, else None.

    Refused: a bad signature, another key (``kid``), another algorithm, another
    audience or issuer, an expired token, or one missing a claim.
    """
    if not looks_like_jwt(token):
        return None
    try:
        if jwt.get_unverified_header(token).get("kid") != key.key_id:
            return None
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": _REQUIRED_CLAIMS},
        )
        pid = claims.get("pid")
        return AccessClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            role=Role(claims["role"]),
            patient_id=uuid.UUID(str(pid)) if pid is not None else None,
            session_id=uuid.UUID(str(claims["sid"])),
            token_id=str(claims["jti"]),
            valid_until=datetime.fromtimestamp(int(claims["exp"]) + CLOCK_SKEW_SECONDS, UTC),
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
