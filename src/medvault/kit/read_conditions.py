"""What a client asks of a byte read: one range, and the validators that condition it.

``Range`` (RFC 9110 §14.2), ``If-None-Match`` (§13.1.2) and ``If-Range`` (§13.1.5) are
parsed here once, for every route that serves a version's bytes, so no face can answer
them differently. Parsing needs no size; a range is resolved against the representation
only once it is known (416 when none of it is satisfiable). No HTTP framework here: the
reading service takes these values, and routes build them from their headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medvault.kit.problems import RangeNotSatisfiable

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

# A position of more digits than this is beyond any file's size. Converting it with
# int() would be wasted work, and past ~4,300 digits Python refuses (a 500 that once
# logged a signed link): such a number stands for "larger than the file" instead.
_MAX_POSITION_DIGITS = 18
_BEYOND_ANY_FILE = 10**_MAX_POSITION_DIGITS


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _BEYOND_ANY_FILE if len(digits) > _MAX_POSITION_DIGITS else int(digits)


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})


@dataclass(frozen=True)
class ByteRange:
    """``bytes=first-last``, ``bytes=first-`` (``last`` None) or ``bytes=-suffix``.

    A suffix range has ``first`` None and its length in ``last``.
    """

    first: int | None
    last: int | None

    @classmethod
    def parse(cls, header: str | None) -> ByteRange | None:
        """The one range asked for, or None to serve the whole representation.

        Malformed or multi-range headers are ignored, as RFC 9110 allows. Absurdly long
        numbers keep their meaning (a start past the end is 416, an end past it is cut
        to the file, a suffix longer than the file is the whole file) without int().
        """
        if not header:
            return None
        match = _RANGE.match(header.strip())
        if match is None:
            return None
        first_text, last_text = match.groups()
        if not first_text and not last_text:
            return None
        if not first_text:
            return cls(first=None, last=_position(last_text))
        first = _position(first_text)
        last = _position(last_text) if last_text else None
        if last is not None and last < first:
            return None
        return cls(first=first, last=last)

    def span(self, size: int) -> tuple[int, int]:
        """The inclusive byte positions this range covers in ``size`` bytes, or 416."""
        if self.first is None:
            suffix = self.last or 0
            if suffix == 0 or size == 0:
                raise _unsatisfiable(size)
            return max(0, size - suffix), size - 1
        if self.first >= size:
            raise _unsatisfiable(size)
        last = self.last if self.last is not None else size - 1
        return self.first, min(last, size - 1)


@dataclass(frozen=True)
class ReadConditions:
    """A content request's range and validators, parsed; the default asks for everything."""

    range: ByteRange | None = None
    # Entity tags with any weak prefix removed ("*" matches every tag).
    if_none_match: tuple[str, ...] = ()
    if_range: str | None = None

    @classmethod
    def parse(
        cls, *, range_header: str | None, if_none_match: str | None, if_range: str | None
    ) -> ReadConditions:
        return cls(
            range=ByteRange.parse(range_header),
            if_none_match=tuple(
                part.strip().removeprefix("W/") for part in if_none_match.split(",")
            )
            if if_none_match
            else (),
            if_range=if_range.strip() if if_range is not None else None,
        )

    def not_modified(self, etag: str) -> bool:
        """True when the client already holds this representation (answer 304)."""
        return "*" in self.if_none_match or etag in self.if_none_match

    def span(self, *, etag: str, size: int) -> tuple[int, int] | None:
        """The byte span to serve, or None for the whole representation.

        An ``If-Range`` that does not name the current tag means the client's partial
        copy is stale, so it gets the whole representation instead of a piece.
        """
        if self.range is None:
            return None
        span = self.range.span(size)
        if self.if_range is not None and self.if_range != etag:
            return None
        return span
