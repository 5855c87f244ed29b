"""The streaming JSON reader agrees with json.loads, chunked any way, and stays bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.fhir.wire.base64_stream import InvalidBase64, base64_decoded
from medvault.fhir.wire.json_stream import MalformedJson, StreamedString, StreamingJsonReader
from medvault.fhir.wire.json_stream import Path as JsonPath
from medvault.kit.problems import PayloadTooLarge

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position, index = 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        yield data[position : position + size]
        position += size
        index += 1


async def _read(
    data: bytes, sizes: list[int], stream_key: str | None = None
) -> tuple[Any, list[tuple[JsonPath, str]]]:
    reader = StreamingJsonReader(
        _chunks(data, sizes),
        stream_at=lambda path: bool(path) and path[-1] == stream_key,
        # Compared with json.loads on any text: the vault's input rule is tested apart.
        refuse_control_characters=False,
    )
    streamed: list[tuple[JsonPath, str]] = []
    while (marker := await reader.next_stream()) is not None:
        pieces = [piece async for piece in reader.stream()]
        streamed.append((marker.path, b"".join(pieces).decode("utf-8", "surrogatepass")))
    return reader.document, streamed


def _without_markers(value: Any, streamed: dict[tuple[Any, ...], str]) -> Any:
    if isinstance(value, StreamedString):
        return streamed[value.path]
    if isinstance(value, dict):
        return {k: _without_markers(v, streamed) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_markers(v, streamed) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(value=JSON, sizes=st.lists(st.integers(min_value=1, max_value=7), max_size=5))
def test_matches_json_loads_however_it_is_chunked(value: Any, sizes: list[int]) -> None:
    data = json.dumps(value, ensure_ascii=False).encode()
    document, streamed = asyncio.run(_read(data, sizes))
    assert document == json.loads(data) and streamed == []


@settings(max_examples=200, deadline=None)
@given(
    value=st.dictionaries(st.sampled_from(["a", "data", "b"]), JSON | st.text(), min_size=1),
    payload=st.text(),
    sizes=st.lists(st.integers(min_value=1, max_value=5), max_size=4),
    ascii_only=st.booleans(),
)
def test_streamed_strings_come_out_exactly(
    value: dict[str, Any], payload: str, sizes: list[int], ascii_only: bool
) -> None:
    doc = {"resource": {**value, "data": payload}, "after": [1, {"data": "x"}]}
    data = json.dumps(doc, ensure_ascii=ascii_only).encode()
    document, streamed = asyncio.run(_read(data, sizes, stream_key="data"))
    by_path = dict(streamed)
    assert by_path[("resource", "data")] == payload
    assert by_path[("after", 1, "data")] == "x"
    assert _without_markers(document, by_path) == json.loads(data)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"{",
        b'{"a":}',
        b'{"a" 1}',
        b'{"a":1,}',
        b"[1 2]",
        b"[1,]",
        b'{"a":1}}',
        b'{"a":1} x',
        b'{"a":tru}',
        b'{"a":01}',
        b'{"a":"\x01"}',
        b'{"a":"\\x"}',
        b'{"a":1,"a":2}',
        b"{1:2}",
        b'["unterminated',
        b'{"data":"abc',
        b'{"data":"a\x02"}',
    ],
)
def test_malformed_json_is_refused(text: bytes) -> None:
    with pytest.raises(MalformedJson):
        asyncio.run(_read(text, [3], stream_key="data"))


def test_the_kept_structure_is_bounded() -> None:
    big_kept = json.dumps({"note": "x" * 5000}).encode()
    big_streamed = json.dumps({"data": "A" * 500_000}).encode()

    async def run(data: bytes) -> int:
        reader = StreamingJsonReader(
            _chunks(data, [4096]), stream_at=lambda p: p == ("data",), max_structure_bytes=1000
        )
        total = 0
        while await reader.next_stream() is not None:
            async for piece in reader.stream():
                total += len(piece)
        return total

    with pytest.raises(PayloadTooLarge):
        asyncio.run(run(big_kept))
    assert asyncio.run(run(big_streamed)) == 500_000  # streamed data does not count
    deep = b"[" * 100 + b"]" * 100
    with pytest.raises(MalformedJson):
        asyncio.run(_read(deep, [10]))


async def _decode(text: bytes, sizes: list[int]) -> bytes:
    return b"".join([piece async for piece in base64_decoded(_chunks(text, sizes))])


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(max_size=300),
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=4),
    wrap=st.booleans(),
)
def test_base64_decodes_across_any_chunking(payload: bytes, sizes: list[int], wrap: bool) -> None:
    import base64

    text = base64.encodebytes(payload) if wrap else base64.b64encode(payload)
    assert asyncio.run(_decode(text, sizes)) == payload


@pytest.mark.parametrize("text", [b"AAA", b"AA==AAAA", b"A@AA", b"AAAA=", b"====", b"AA=A"])
def test_invalid_base64_is_refused(text: bytes) -> None:
    with pytest.raises(InvalidBase64):
        asyncio.run(_decode(text, [2]))
