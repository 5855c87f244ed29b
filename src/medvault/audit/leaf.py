"""The canonical bytes of one audit event: what a Merkle leaf commits to.

Format ``medvault.audit.v1`` is a JSON array, serialised canonically and encoded as
UTF-8::

    ["medvault.audit.v1", id, occurred_at, actor_id, actor_role, action,
     resource_type, resource_id, patient_id, outcome, client_ip, user_agent,
     request_id, details, break_glass_reason]

Why each choice:

* **Every column except ``leaf_index``.** Any edit of what an event says changes its
  leaf hash. ``leaf_index`` is the leaf's *position*, which the tree already commits
  to; hashing it too would add nothing and would make the leaf depend on sealing order.
* **The id is included**, so a row that is re-numbered (or a row copied into another
  row's place) no longer matches its leaf, and the verifier can say which row moved.
* **A version tag first.** The field list is positional, so adding a column means a
  new format; the tag keeps old leaves verifiable and stops bytes of one format from
  ever being read as another.
* **JSON, not a home-made binary format**: unambiguous by construction (strings are
  quoted and escaped, ``null`` differs from ``""``), easy for an outside auditor to
  reproduce in any language, and encoded in C by :mod:`json`.
* **occurred_at** as ISO-8601 UTC with exactly six fractional digits and a ``Z``
  (``2026-11-23T21:14:00.000000Z``): both databases keep microseconds, and a fixed
  width never depends on whether the microseconds happen to be zero.
* **patient_id** as the lower-case hyphenated UUID; absent values are ``null``.
* **details** canonically: keys sorted, no whitespace, ``ensure_ascii=False``. The
  databases hand the object back parsed (PostgreSQL ``json``, SQLite text), so we
  hash a re-serialisation that does not depend on how the driver spelled it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Column

from medvault.audit.merkle import leaf_hash
from medvault.audit.models import AuditEvent
from medvault.db.base import ClinicalBase

LEAF_FORMAT: Final = "medvault.audit.v1"

# The encoded columns, in format order: queries select exactly these.
_TABLE = ClinicalBase.metadata.tables[AuditEvent.__tablename__]
LEAF_COLUMNS: Final[tuple[Column[Any], ...]] = tuple(
    _TABLE.c[name]
    for name in (
        "id",
        "occurred_at",
        "actor_id",
        "actor_role",
        "action",
        "resource_type",
        "resource_id",
        "patient_id",
        "outcome",
        "client_ip",
        "user_agent",
        "request_id",
        "details",
        "break_glass_reason",
    )
)
_OCCURRED_AT = 1
_PATIENT_ID = 7

_encode_json = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=True
).encode


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_values(values: Sequence[Any]) -> bytes:
    """The leaf bytes of one event given as values in :data:`LEAF_COLUMNS` order."""
    fields: list[Any] = [LEAF_FORMAT, *values]
    fields[_OCCURRED_AT + 1] = _timestamp(values[_OCCURRED_AT])
    patient_id: uuid.UUID | None = values[_PATIENT_ID]
    fields[_PATIENT_ID + 1] = None if patient_id is None else str(patient_id)
    return _encode_json(fields).encode("utf-8")


def encode_event(event: AuditEvent) -> bytes:
    """The leaf bytes of a loaded :class:`AuditEvent`."""
    return encode_values([getattr(event, column.key) for column in LEAF_COLUMNS])


def event_leaf_hash(values: Sequence[Any]) -> bytes:
    """RFC 6962 leaf hash of an event given in :data:`LEAF_COLUMNS` order."""
    return leaf_hash(encode_values(values))
