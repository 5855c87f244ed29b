"""The Create-document form, autosaved while it is written, so a timeout loses nothing.

The portal posts the form's fields every few seconds while they change; this keeps
the latest copy per user, sealed (see ``documents.models.ComposeDraft``), and gives it
back when its author opens the form again, after a timeout and a new login included.
Only the form's own fields are kept (``compose.form``'s names): never a CSRF token or
anything else a client adds. Every save makes a new data key, so no (key, nonce) pair
is ever used twice.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from medvault.crypto.errors import CryptoError
from medvault.crypto.keyring import Keyring, WrappedDek, new_dek
from medvault.documents.compose.form import CHECKBOX, ROW_KEY, SCALAR_FIELDS
from medvault.documents.models import ComposeDraft
from medvault.kit.clock import utcnow
from medvault.kit.i18n import msg

DRAFT_TTL = timedelta(days=7)
# Far above what the form's own limits allow (50 rows per list, bounded texts).
MAX_DRAFT_BYTES = 512 * 1024
NONCE_BYTES = 12
_AAD_PREFIX = b"medvault compose draft v1\x00"


class DraftTooLarge(ValueError):
    """More than any Create-document form can hold."""


@dataclass(frozen=True)
class SavedDraft:
    values: dict[str, str]
    saved_at: datetime


def _aad(draft_id: uuid.UUID, user_id: uuid.UUID) -> bytes:
    return _AAD_PREFIX + draft_id.bytes + user_id.bytes


def form_fields(posted: dict[str, str]) -> dict[str, str]:
    """The form's own fields from a post, blank ones left out."""
    return {
        key: value
        for key, value in posted.items()
        if value.strip()
        and (key in SCALAR_FIELDS or key == CHECKBOX or ROW_KEY.fullmatch(key) is not None)
    }


def save(
    session: Session,
    *,
    keyring: Keyring,
    user_id: uuid.UUID,
    values: dict[str, str],
    now: datetime | None = None,
) -> datetime:
    """Replace this user's draft with ``values`` (the form's fields); returns its time."""
    plaintext = json.dumps(form_fields(values), separators=(",", ":"), sort_keys=True).encode()
    if len(plaintext) > MAX_DRAFT_BYTES:
        raise DraftTooLarge(msg("a draft holds at most {size} KiB", size=MAX_DRAFT_BYTES // 1024))
    now = now or utcnow()
    draft_id = uuid.uuid4()
    dek = new_dek()
    wrapped = keyring.wrap_dek(dek, version_id=draft_id)
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = nonce + AESGCM(dek).encrypt(nonce, plaintext, _aad(draft_id, user_id))
    # One draft per user, and none older than the TTL for anyone.
    session.execute(
        delete(ComposeDraft).where(
            (ComposeDraft.user_id == user_id) | (ComposeDraft.saved_at < now - DRAFT_TTL)
        )
    )
    session.add(
        ComposeDraft(
            id=draft_id,
            user_id=user_id,
            kek_id=wrapped.kek_id,
            wrapped_dek=wrapped.wrapped,
            sealed=sealed,
            saved_at=now,
        )
    )
    return now


def load(
    session: Session, *, keyring: Keyring, user_id: uuid.UUID, now: datetime | None = None
) -> SavedDraft | None:
    """This user's draft, or None (none saved, expired, or no longer readable)."""
    row = session.scalar(select(ComposeDraft).where(ComposeDraft.user_id == user_id))
    if row is None or row.saved_at < (now or utcnow()) - DRAFT_TTL:
        return None
    try:
        dek = keyring.unwrap_dek(WrappedDek(row.kek_id, row.wrapped_dek), version_id=row.id)
        nonce, sealed = row.sealed[:NONCE_BYTES], row.sealed[NONCE_BYTES:]
        plaintext = AESGCM(dek).decrypt(nonce, sealed, _aad(row.id, row.user_id))
    except (CryptoError, InvalidTag):
        # A KEK since removed from the keyring, or a damaged row: the draft is lost,
        # the form still opens.
        return None
    values = json.loads(plaintext)
    if not isinstance(values, dict):
        return None
    return SavedDraft(values={str(k): str(v) for k, v in values.items()}, saved_at=row.saved_at)


def discard(session: Session, *, user_id: uuid.UUID) -> bool:
    """Remove this user's draft; True if there was one."""
    result = session.execute(delete(ComposeDraft).where(ComposeDraft.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))
