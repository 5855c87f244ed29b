"""Parsing Range, If-None-Match and If-Range once, for every content route."""

from __future__ import annotations

import pytest

from medvault.kit.problems import RangeNotSatisfiable
from medvault.kit.read_conditions import ByteRange, ReadConditions

ETAG = '"abc"'


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (None, None),
        ("", None),
        ("bytes=0-9", ByteRange(0, 9)),
        (" bytes=5- ", ByteRange(5, None)),
        ("bytes=-700", ByteRange(None, 700)),
        ("bytes=9-5", None),  # last before first: ignored, the whole file
        ("bytes=-", None),
        ("bytes=0-5,10-20", None),  # several ranges: ignored, as RFC 9110 allows
        ("items=0-5", None),
        ("bytes=" + "9" * 5000 + "-", ByteRange(10**18, None)),  # no int() of 5,000 digits
    ],
)
def test_range_headers_parse_without_the_size(header: str | None, parsed: ByteRange | None) -> None:
    assert ByteRange.parse(header) == parsed


@pytest.mark.parametrize(
    ("byte_range", "span"),
    [
        (ByteRange(0, 9), (0, 9)),
        (ByteRange(90, 10**18), (90, 99)),  # cut to the file
        (ByteRange(None, 10), (90, 99)),
        (ByteRange(None, 500), (0, 99)),  # a suffix longer than the file is all of it
    ],
)
def test_a_range_resolves_against_the_size(byte_range: ByteRange, span: tuple[int, int]) -> None:
    assert byte_range.span(100) == span


@pytest.mark.parametrize("byte_range", [ByteRange(100, None), ByteRange(None, 0)])
def test_nothing_satisfiable_is_416_with_the_size(byte_range: ByteRange) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        byte_range.span(100)
    assert refused.value.headers == {"Content-Range": "bytes */100"}


def test_validators() -> None:
    def parse(**headers: str | None) -> ReadConditions:
        return ReadConditions.parse(
            range_header=headers.get("range"),
            if_none_match=headers.get("if_none_match"),
            if_range=headers.get("if_range"),
        )

    assert parse(if_none_match=f'"x", W/{ETAG}').not_modified(ETAG)
    assert parse(if_none_match="*").not_modified(ETAG)
    assert not parse(if_none_match='"x"').not_modified(ETAG)
    assert not parse().not_modified(ETAG)
    assert parse(range="bytes=0-9", if_range=f" {ETAG} ").span(etag=ETAG, size=100) == (0, 9)
    # A stale partial copy gets the whole representation.
    assert parse(range="bytes=0-9", if_range='"old"').span(etag=ETAG, size=100) is None
    assert parse().span(etag=ETAG, size=100) is None
