"""FHIR search parameters: parsing values (token, reference, date, string) and results
paging (``_count``, ``_sort``, ``_total``, keyset ``_cursor``).

Only the protocol lives here: what a parameter means and how a page is linked. Which
rows a parsed value selects is each resource's business (its ``parse_search`` builds
the filters, ``fhir.repository`` turns them into SQL).

Unknown parameters are ignored, as FHIR prescribes, and reported back in an
OperationOutcome entry of the Bundle; with ``Prefer: handling=strict`` they are an
error instead. A known parameter with a modifier or prefix the vault does not
implement is always an error: ignoring it would return the wrong rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from medvault.fhir.wire.outcome import InvalidSearch
from medvault.kit.keyset import InvalidCursor
from medvault.kit.text import bounded_values

DEFAULT_COUNT = 20
MAX_COUNT = 100
# Parameters about the response rather than the rows; never "unknown".
RESULT_PARAMS = frozenset({"_count", "_sort", "_total", "_cursor", "_format", "_pretty"})
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True)
class DateBound:
    """One date search value: FHIR prefix, and the value's range [low, high)."""

    prefix: str
    low: datetime | date
    high: datetime | date


@dataclass(frozen=True)
class Position:
    """A row's place in a keyset order: its sort value and id (what a cursor holds)."""

    value: Any
    id: Any


@dataclass(frozen=True)
class Token:
    """``system|code``; None where the client left a part out (``code``, ``system|``)."""

    system: str | None
    code: str | None


def split_values(raw: str) -> list[str]:
    """A parameter's comma-separated OR values, honouring FHIR's ``\\,`` escape."""
    values, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    # Each value becomes an OR'ed SQL term: 1,700 of them overflowed SQLite's expression tree.
    return bounded_values([value for value in values if value != ""], what="A search parameter")


def token(raw: str) -> Token:
    if "|" not in raw:
        return Token(None, raw)
    system, _, code = raw.partition("|")
    return Token(system or "", code or None)


def _fraction_to_micro(digits: str) -> tuple[int, int]:
    """Microseconds of a fraction, and the fraction's precision in microseconds."""
    digits = digits[:6]
    return int(digits.ljust(6, "0")), 10 ** (6 - len(digits))


def date_range(raw: str, *, name: str, dates_only: bool = False) -> tuple[Any, Any]:
    """The range [low, high) a FHIR date search value stands for.

    Precision decides the width: ``2024`` is the whole year, ``2024-03-01T10:15`` one
    minute. A value without a time zone is taken as UTC.
    """
    match = _DATE.match(raw)
    if match is None:
        raise InvalidSearch(
            f"{name} takes a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm])."
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        if hour is not None:
            if dates_only:
                raise InvalidSearch(f"{name} is a date: search it without a time.")
            tz = UTC
            if zone and zone != "Z":
                sign = 1 if zone[0] == "+" else -1
                hours, minutes = int(zone[1:3]), int(zone[4:6])
                tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
            micro, step = _fraction_to_micro(fraction) if fraction else (0, 0)
            start = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                micro,
                tzinfo=tz,
            ).astimezone(UTC)
            if fraction:
                width = timedelta(microseconds=step)
            elif second is not None:
                width = timedelta(seconds=1)
            else:
                width = timedelta(minutes=1)
            return start, start + width
        if day is not None:
            first = date(int(year), int(month), int(day))
            last = first + timedelta(days=1)
        elif month is not None:
            first = date(int(year), int(month), 1)
            last = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        else:
            first, last = date(int(year), 1, 1), date(int(year) + 1, 1, 1)
    except ValueError:
        raise InvalidSearch(f"{name} names a day that does not exist.") from None
    if dates_only:
        return first, last
    return (
        datetime(first.year, first.month, first.day, tzinfo=UTC),
        datetime(last.year, last.month, last.day, tzinfo=UTC),
    )


def date_bounds(raw: str, *, name: str, dates_only: bool = False) -> tuple[DateBound, ...]:
    bounds = []
    for value in split_values(raw):
        prefix = value[:2] if value[:2].isalpha() else "eq"
        if value[:2].isalpha():
            value = value[2:]
        if prefix not in PREFIXES:
            raise InvalidSearch(
                f"{name}: the prefix {prefix!r} is not supported; use one of {', '.join(PREFIXES)}."
            )
        low, high = date_range(value, name=name, dates_only=dates_only)
        bounds.append(DateBound(prefix, low, high))
    return tuple(bounds)


# -- the request ---------------------------------------------------------------------


@dataclass
class ParsedSearch:
    """A search request taken apart: what filters, which page, and what to report."""

    count: int = DEFAULT_COUNT
    sort: str = ""
    descending: bool = True
    total: bool = True
    cursor: PageCursor | None = None
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


# A known parameter's handler: (modifier, value) -> None, recording its filter.
Handler = Callable[[str | None, str], None]


def parse(
    params: Sequence[tuple[str, str]],
    *,
    handlers: Mapping[str, Handler],
    sorts: Mapping[str, bool],
    default_sort: str,
    strict: bool,
) -> ParsedSearch:
    """Run each parameter through its handler; ``sorts`` maps _sort values to descending."""
    parsed = ParsedSearch(sort=default_sort, descending=sorts[default_sort])
    cursor_raw: str | None = None
    # Repeating a parameter ANDs it: the bound holds for all values together.
    searched = [value for name, value in params if name.partition(":")[0] in handlers]
    bounded_values([v for value in searched for v in split_values(value)], what="A search")
    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        if name == "_count":
            parsed.count = _count(value)
        elif name == "_sort":
            if value not in sorts:
                raise InvalidSearch(
                    f"This _sort is not supported here; use one of {', '.join(sorts)}."
                )
            parsed.sort, parsed.descending = value, sorts[value]
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise InvalidSearch("_total is none, estimate or accurate.")
            parsed.total = value != "none"
        elif name == "_cursor":
            cursor_raw = value
        elif name in ("_format", "_pretty"):
            continue
        elif name in handlers:
            handlers[name](modifier or None, value)
            parsed.used.append((raw_name, value))
        elif strict:
            raise InvalidSearch(
                f"The search parameter {raw_name!r} is not supported (Prefer: handling=strict)."
            )
        else:
            parsed.ignored.append(raw_name)
    if cursor_raw is not None:
        parsed.cursor = PageCursor.decode(cursor_raw, sort=parsed.sort)
    return parsed


def _count(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidSearch("_count is a whole number from 0.")
    # FHIR lets a server return fewer than asked for; the self link shows the real size.
    # Beyond 18 digits int() is pointless (and past ~4,300 digits Python refuses it).
    return MAX_COUNT if len(raw) > 18 else min(int(raw), MAX_COUNT)


def no_modifier(name: str, modifier: str | None, allowed: Iterable[str] = ()) -> None:
    if modifier is not None and modifier not in allowed:
        raise InvalidSearch(f"The modifier :{modifier} is not supported on {name}.")


# -- paging ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PageCursor:
    """An opaque position in a result list: after (next) or before (prev) a row.

    The sort order travels inside, so a cursor cannot be replayed against another
    order and silently skip or repeat rows.
    """

    backwards: bool
    sort: str
    position: Position

    def encode(self) -> str:
        value = self.position.value
        raw = {
            "b": self.backwards,
            "s": self.sort,
            "v": value.isoformat() if isinstance(value, datetime) else value,
            "i": self.position.id if isinstance(self.position.id, int) else str(self.position.id),
        }
        return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, *, sort: str) -> PageCursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if data["s"] != sort or not isinstance(data["b"], bool):
                raise ValueError("cursor from another sort order")
            value = data["v"]
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
                if value.tzinfo is None:
                    raise ValueError("naive timestamp")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                # A relevance rank (``_content`` searches), exactly as the database gave it.
                if not math.isfinite(value):
                    raise ValueError("rank is not finite")
                value = float(value)
            elif value is not None:
                raise TypeError("unexpected cursor value")
            ident = data["i"]
            if not isinstance(ident, int | str) or isinstance(ident, bool):
                raise TypeError("unexpected cursor id")
            return cls(data["b"], sort, Position(value, _cursor_id(ident)))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidCursor(
                "Follow the Bundle's next or prev link as it is, with the same _sort."
            ) from exc


def _cursor_id(ident: int | str) -> Any:
    if isinstance(ident, int):
        return ident
    return uuid.UUID(ident)


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next: PageCursor | None
    prev: PageCursor | None


def page_of(rows: list[Any], parsed: ParsedSearch, position: Callable[[Any], Position]) -> Page:
    """Trim the extra row and work out the next and previous cursors."""
    count, cursor = parsed.count, parsed.cursor
    backwards = cursor is not None and cursor.backwards
    more = len(rows) > count
    if backwards:
        # A backwards fetch's extra row is the earliest one: it means another prev page.
        rows = rows[len(rows) - count :] if more else rows
        has_prev, has_next = more, True
    else:
        rows = rows[:count]
        has_prev, has_next = cursor is not None, more
    if not rows:
        return Page(rows, None, None)
    return Page(
        rows,
        PageCursor(False, parsed.sort, position(rows[-1])) if has_next else None,
        PageCursor(True, parsed.sort, position(rows[0])) if has_prev else None,
    )


def links(url: str, parsed: ParsedSearch, page: Page, *, default_sort: str) -> list[dict[str, str]]:
    """self/first/next/prev links; each repeats the filters that were applied."""

    def link(relation: str, cursor: PageCursor | None) -> dict[str, str]:
        query = list(parsed.used)
        if parsed.sort != default_sort:
            query.append(("_sort", parsed.sort))
        query.append(("_count", str(parsed.count)))
        if not parsed.total:
            query.append(("_total", "none"))
        if cursor is not None:
            query.append(("_cursor", cursor.encode()))
        return {"relation": relation, "url": f"{url}?{urlencode(query)}"}

    result = [link("self", parsed.cursor), link("first", None)]
    if page.prev is not None:
        result.append(link("previous", page.prev))
    if page.next is not None:
        result.append(link("next", page.next))
    return result
