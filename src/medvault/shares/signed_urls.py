"""Signed download URLs that the vault itself serves, without a bearer token.

A link is an HS256 JWT bound to one version id, with an expiry and a unique id
(jti) for the audit trail. Changing any byte breaks the signature. The secret is
the vault's own signing key, so links survive restarts and work on every instance.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import SignedUrlExpired, SignedUrlInvalid

ALGORITHM = "HS256"
AUDIENCE = "medvault:download"


@dataclass(frozen=True)
class DownloadGrant:
    version_id: uuid.UUID
    document_id: uuid.UUID
    issued_by: str
    link_id: str
    expires_at: datetime


def sign(
    *,
    secret: bytes,
    version_id: uuid.UUID,
    document_id: uuid.UUID,
    issued_by: str,
    ttl_seconds: int,
) -> tuple[str, DownloadGrant]:
    now = utcnow()
    grant = DownloadGrant(
        version_id=version_id,
        document_id=document_id,
        issued_by=issued_by,
        link_id=secrets.token_hex(8),
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    token = jwt.encode(
        {
            "aud": AUDIENCE,
            "sub": str(version_id),
            "doc": str(document_id),
            "iss": issued_by,
            "jti": grant.link_id,
            "iat": now,
            "exp": grant.expires_at,
        },
        secret,
        algorithm=ALGORITHM,
    )
    return token, grant


def verify(*, secret: bytes, token: str) -> DownloadGrant:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "doc", "jti", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise SignedUrlExpired(N_("Ask for a new download link.")) from None
    except jwt.PyJWTError:
        raise SignedUrlInvalid(N_("The link is malformed or was altered.")) from None
    try:
        return DownloadGrant(
            version_id=uuid.UUID(claims["sub"]),
            document_id=uuid.UUID(claims["doc"]),
            issued_by=str(claims["iss"]),
            link_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=utcnow().tzinfo),
        )
    except (ValueError, TypeError):
        raise SignedUrlInvalid(N_("The link is malformed or was altered.")) from None
