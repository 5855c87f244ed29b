"""Opaque keyset cursors for newest-first listings ordered by (created_at, id).

A cursor names the last row the client saw; the next page is everything strictly
older. Rows inserted meanwhile are newer, so they never shift or repeat a page,
and no OFFSET scan is ever needed.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from medvault.kit.problems import BadRequest


class InvalidCursor(BadRequest):
    slug, title = "invalid-cursor", "The pagination cursor is not valid"


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps({"t": self.created_at.isoformat(), "i": str(self.id)}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            created_at = datetime.fromisoformat(data["t"])
            if created_at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(created_at, uuid.UUID(data["i"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCursor("Use the next_cursor value from a previous page as-is.") from exc


def older_than(
    cursor: Cursor,
    created_at: InstrumentedAttribute[datetime],
    id_column: InstrumentedAttribute[uuid.UUID],
) -> ColumnElement[bool]:
    """Rows strictly after the cursor in (created_at DESC, id DESC) order."""
    # A row-value comparison, which PostgreSQL and SQLite both turn into an index range
    # scan; the equivalent OR expansion makes PostgreSQL filter every row it skips.
    return tuple_(created_at, id_column) < tuple_(
        literal(cursor.created_at, created_at.type), literal(cursor.id, id_column.type)
    )
