"""State a portal session keeps server-side behind an opaque id: a list's filters and page.

A posted search answers with a 303 to ``/documents?view=<id>``, so Back, reload,
bookmarks within the session and "← All documents" all work with plain GETs, while
the search words stay out of every URL, log line and history entry. The id is
random; it resolves only for the session that saved it, and only while that session
is live (the caller has already resolved the session). The state is sealed with
AES-GCM under a key derived from the vault's secret key, with the view's id, its
session and its page as associated data, so a row copied to another session or page
does not open.

What the state holds is the caller's business (a JSON object); this module only keeps
it, bounded: a session keeps its newest ``MAX_VIEWS_PER_SESSION`` views, and views
older than the longest a session can live are swept as new ones are saved.
"""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medvault.auth.models import WebSessionView
from medvault.kit.clock import utcnow

MAX_VIEWS_PER_SESSION = 200
NONCE_BYTES = 12
# 128 bits, URL-safe: 22 characters.
ID_BYTES = 16
MAX_STATE_BYTES = 16 * 1024
_KDF_INFO = b"medvault portal session views v1"


class ViewTooLarge(ValueError):
    """The state to keep is larger than a list's filters can honestly be."""


def _key(secret_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(secret_key)


def _aad(view_id: str, session_id: uuid.UUID, page: str) -> bytes:
    return f"{view_id}\x00{session_id}\x00{page}".encode()


def is_view_id(value: str) -> bool:
    """Cheap shape check before a lookup: anything else is not one of ours."""
    return 16 <= len(value) <= 32 and all(c.isalnum() or c in "-_" for c in value)


def save(
    session: Session,
    *,
    secret_key: bytes,
    session_id: uuid.UUID,
    page: str,
    state: dict[str, Any],
    max_session_seconds: int,
    now: datetime | None = None,
) -> str:
    """Keep ``state`` for this session and page; returns the new view's id."""
    plaintext = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    if len(plaintext) > MAX_STATE_BYTES:
        raise ViewTooLarge(f"a view holds at most {MAX_STATE_BYTES} bytes")
    now = now or utcnow()
    view_id = secrets.token_urlsafe(ID_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = nonce + AESGCM(_key(secret_key)).encrypt(
        nonce, plaintext, _aad(view_id, session_id, page)
    )
    session.add(
        WebSessionView(id=view_id, session_id=session_id, page=page, state=sealed, created_at=now)
    )
    _prune(session, session_id=session_id, now=now, max_session_seconds=max_session_seconds)
    return view_id


def load(
    session: Session, *, secret_key: bytes, session_id: uuid.UUID, page: str, view_id: str
) -> dict[str, Any] | None:
    """The state saved under ``view_id`` by this session for this page, or None."""
    if not is_view_id(view_id):
        return None
    row = session.scalar(
        select(WebSessionView).where(
            WebSessionView.id == view_id,
            WebSessionView.session_id == session_id,
            WebSessionView.page == page,
        )
    )
    if row is None:
        return None
    nonce, sealed = row.state[:NONCE_BYTES], row.state[NONCE_BYTES:]
    try:
        plaintext = AESGCM(_key(secret_key)).decrypt(nonce, sealed, _aad(view_id, session_id, page))
    except InvalidTag:
        # Saved under another secret key (rotated since): as good as expired.
        return None
    state = json.loads(plaintext)
    return state if isinstance(state, dict) else None


def forget_session(session: Session, session_id: uuid.UUID) -> None:
    """Drop every view of a session that ended (logout); the cascade covers deleted rows."""
    session.execute(delete(WebSessionView).where(WebSessionView.session_id == session_id))


def _prune(
    session: Session, *, session_id: uuid.UUID, now: datetime, max_session_seconds: int
) -> None:
    # Views no live session can still reach: older than any session may live.
    session.execute(
        delete(WebSessionView).where(
            WebSessionView.created_at < now - timedelta(seconds=max_session_seconds)
        )
    )
    keep_from = session.scalar(
        select(WebSessionView.created_at)
        .where(WebSessionView.session_id == session_id)
        .order_by(WebSessionView.created_at.desc())
        .offset(MAX_VIEWS_PER_SESSION)
        .limit(1)
    )
    if keep_from is not None:
        session.execute(
            delete(WebSessionView).where(
                WebSessionView.session_id == session_id,
                WebSessionView.created_at <= keep_from,
            )
        )
