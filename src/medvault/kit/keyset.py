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
from typing import Any

from sqlalchemy import ColumnElement, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from medvault.kit.i18n import N_
from medvault.kit.problems import BadRequest


class InvalidCursor(BadRequest):
    slug, title = "invalid-cursor", N_("The pagination cursor is not valid")


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
            raise InvalidCursor(
                N_("Use the next_cursor value from a previous page as-is.")
            ) from exc


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


SortValue = datetime | str | int


@dataclass(frozen=True)
class SortCursor:
    """A keyset cursor for a listing sorted by ``sort`` (any column), ties broken by id.

    The sort name travels inside the cursor, so a cursor from one ordering can never
    be replayed against another and silently skip or repeat rows.
    """

    sort: str
    value: SortValue
    id: uuid.UUID

    def encode(self) -> str:
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        raw = json.dumps({"s": self.sort, "v": value, "i": str(self.id)}).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, *, sort: str, kind: type[SortValue]) -> SortCursor:
        """Parse ``token`` for a listing sorted by ``sort`` whose values are ``kind``."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            if data["s"] != sort:
                raise ValueError("cursor from another sort order")
            value: SortValue
            if kind is datetime:
                value = datetime.fromisoformat(data["v"])
                if value.tzinfo is None:
                    raise ValueError("naive timestamp")
            elif kind is int:
                if not isinstance(data["v"], int) or isinstance(data["v"], bool):
                    raise TypeError("not an integer")
                value = data["v"]
            else:
                if not isinstance(data["v"], str):
                    raise TypeError("not a string")
                value = data["v"]
            return cls(sort, value, uuid.UUID(data["i"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCursor(
                N_("Use the next_cursor value from a previous page, with the same sort.")
            ) from exc


def beyond(
    cursor: SortCursor,
    column: ColumnElement[Any],
    id_column: InstrumentedAttribute[uuid.UUID],
    *,
    descending: bool,
) -> ColumnElement[bool]:
    """Rows strictly after the cursor in (column, id) order, either direction."""
    row = tuple_(column, id_column)
    bound = tuple_(literal(cursor.value, column.type), literal(cursor.id, id_column.type))
    return row < bound if descending else row > bound
