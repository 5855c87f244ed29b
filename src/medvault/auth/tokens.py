"""API token format and hashing.

Tokens carry 256 bits of randomness, so a plain SHA-256 is a sufficient, fast,
non-reversible lookup key; a slow password hash would only add latency per request.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "mvt_"  # noqa: S105  (a public prefix that makes leaked tokens greppable)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX) and 20 < len(value) < 200
