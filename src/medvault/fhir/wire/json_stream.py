"""A streaming JSON reader that keeps the small parts and streams the big strings.

A FHIR resource can carry a whole document as base64 in ``data`` (a Binary, an
``Attachment``, a transaction Bundle of several). Parsing such a body with
``json.loads`` would hold the document in memory twice (text and decoded). This
reader builds the JSON document as usual, except that strings at the paths the
caller chooses are not kept: their characters are handed over as a byte stream while
the body arrives, and a :class:`StreamedString` marker takes their place.

Everything else is bounded: the kept part of the document (``max_structure_bytes``),
its nesting depth and the number of streamed strings. The reader is pull-based and
single-task: :meth:`next_stream` parses up to the next streamed string,
:meth:`stream` yields its bytes, and after ``next_stream`` returns None
:attr:`document` is complete.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from medvault.fhir.wire.outcome import InvalidResource
from medvault.kit.problems import PayloadTooLarge
from medvault.kit.text import require_clean_text

Path = tuple[str | int, ...]

_WHITESPACE = frozenset(b" \t\r\n")
_NUMBER_BYTES = frozenset(b"+-0123456789.eE")
_CONTROL = re.compile(rb"[\x00-\x1f]")
_SIMPLE_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}

DEFAULT_MAX_STRUCTURE_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 48


class MalformedJson(InvalidResource):
    slug, title = "fhir-invalid-json", "The body is not valid JSON"


@dataclass(frozen=True)
class StreamedString:
    """Stands in the document where a streamed string was."""

    path: Path
    index: int


@dataclass
class _Frame:
    container: dict[str, Any] | list[Any]
    key: str | None = None


# Parser states.
_VALUE, _KEY_OR_END, _KEY, _COLON, _AFTER_VALUE, _VALUE_OR_END, _STREAMING, _DONE = range(8)


@dataclass
class StreamingJsonReader:
    chunks: AsyncIterator[bytes]
    stream_at: Callable[[Path], bool]
    max_structure_bytes: int = DEFAULT_MAX_STRUCTURE_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_streams: int = 100
    # The vault's rule on control characters (kit/text.py), for every string kept in
    # the document, keys too. On by default so no FHIR entry point can forget it; off
    # only where the reader is tested as a plain JSON parser.
    refuse_control_characters: bool = True
    _buf: bytes = b""
    _pos: int = 0
    _eof: bool = False
    _structure: int = 0
    _state: int = _VALUE
    _stack: list[_Frame] = field(default_factory=list)
    _root: Any = None
    _has_root: bool = False
    _streams: int = 0
    _streaming: Path | None = None

    # -- input ---------------------------------------------------------------------

    async def _fill(self) -> bool:
        """Make at least one unread byte available; False at the end of the body."""
        while self._pos >= len(self._buf):
            if self._eof:
                return False
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self._eof = True
                return False
            self._buf, self._pos = chunk, 0
        return True

    def _count(self, n: int) -> None:
        self._structure += n
        if self._structure > self.max_structure_bytes:
            raise PayloadTooLarge(
                f"The JSON outside of base64 data is larger than {self.max_structure_bytes} bytes.",
                max_bytes=self.max_structure_bytes,
            )

    async def _byte(self) -> int:
        """The next byte of the kept structure (counted against its limit)."""
        if not await self._fill():
            raise MalformedJson("The body ended before the JSON document did.")
        value = self._buf[self._pos]
        self._pos += 1
        self._count(1)
        return value

    async def _significant(self) -> int | None:
        """The next non-whitespace byte, or None at the end of the body."""
        while True:
            if not await self._fill():
                return None
            value = self._buf[self._pos]
            self._pos += 1
            self._count(1)
            if value not in _WHITESPACE:
                return value

    # -- kept values ---------------------------------------------------------------

    async def _raw_string(self) -> bytes:
        """The bytes of a kept string up to its closing quote (opening quote consumed)."""
        parts: list[bytes] = []
        while True:
            if not await self._fill():
                raise MalformedJson("A string is not terminated.")
            buf, start = self._buf, self._pos
            quote = buf.find(b'"', start)
            slash = buf.find(b"\\", start)
            if slash != -1 and (quote == -1 or slash < quote):
                parts.append(buf[start:slash])
                self._count(slash - start)
                self._pos = slash + 1
                self._count(1)
                parts.append(b"\\" + bytes([await self._byte()]))
                continue
            end = len(buf) if quote == -1 else quote
            parts.append(buf[start:end])
            self._count(end - start)
            if quote == -1:
                self._pos = len(buf)
                continue
            self._pos = quote + 1
            self._count(1)
            return b"".join(parts)

    async def _string(self) -> str:
        raw = await self._raw_string()
        try:
            value = json.loads(b'"' + raw + b'"')
        except (ValueError, UnicodeDecodeError):
            raise MalformedJson("A string has an invalid escape or character.") from None
        assert isinstance(value, str)
        # The one place every FHIR resource string is decoded (keys too): the vault's
        # rule on control characters holds here for Patient, DocumentReference, Bundle.
        if self.refuse_control_characters:
            require_clean_text([("resource", value)])
        return value

    async def _literal(self, first: int) -> Any:
        for word, value in ((b"true", True), (b"false", False), (b"null", None)):
            if first == word[0]:
                for expected in word[1:]:
                    if await self._byte() != expected:
                        break
                else:
                    return value
                break
        raise MalformedJson("Unexpected characters where a JSON value should be.")

    async def _number(self, first: int) -> int | float:
        token = bytearray([first])
        while await self._fill() and self._buf[self._pos] in _NUMBER_BYTES:
            token.append(self._buf[self._pos])
            self._pos += 1
            self._count(1)
        try:
            value = json.loads(bytes(token))
        except ValueError:
            raise MalformedJson("A number is malformed.") from None
        if not isinstance(value, int | float):
            raise MalformedJson("A number is malformed.")
        return value

    # -- structure -----------------------------------------------------------------

    def _path(self) -> Path:
        """Where the value about to be read sits in the document."""
        path: list[str | int] = []
        last = len(self._stack) - 1
        for depth, frame in enumerate(self._stack):
            if isinstance(frame.container, dict):
                assert frame.key is not None
                path.append(frame.key)
            else:
                # An open child is already the list's last item; the top list's next
                # value will be appended after its current items.
                path.append(len(frame.container) - (depth < last))
        return tuple(path)

    def _emit(self, value: Any) -> None:
        if not self._stack:
            self._root, self._has_root = value, True
            self._state = _DONE
            return
        frame = self._stack[-1]
        if isinstance(frame.container, dict):
            # The key stays until the next one is read: an open child's path needs it.
            assert frame.key is not None
            frame.container[frame.key] = value
        else:
            frame.container.append(value)
        self._state = _AFTER_VALUE

    def _open(self, container: dict[str, Any] | list[Any]) -> None:
        if len(self._stack) >= self.max_depth:
            raise MalformedJson(f"The JSON is nested deeper than {self.max_depth} levels.")
        self._emit(container)
        self._stack.append(_Frame(container))
        self._state = _KEY_OR_END if isinstance(container, dict) else _VALUE_OR_END

    def _close(self, closer: int) -> None:
        frame = self._stack[-1]
        expected = ord("}") if isinstance(frame.container, dict) else ord("]")
        if closer != expected:
            raise MalformedJson("Brackets do not match.")
        self._stack.pop()
        self._state = _AFTER_VALUE if self._stack else _DONE

    async def _key(self) -> None:
        key = await self._string()
        frame = self._stack[-1]
        assert isinstance(frame.container, dict)
        if key in frame.container:
            # FHIR forbids repeated properties; taking either silently would be a guess.
            raise MalformedJson(f"The property {key!r} appears twice in one object.")
        frame.key = key
        self._state = _COLON

    async def next_stream(self) -> StreamedString | None:
        """Parse on to the next streamed string; None once the document is complete."""
        if self._state == _STREAMING:
            raise RuntimeError("read the current streamed string to its end first")
        while True:
            if self._state == _DONE:
                if await self._significant() is not None:
                    raise MalformedJson("There is more after the JSON document.")
                return None
            char = await self._significant()
            if char is None:
                raise MalformedJson("The body ended before the JSON document did.")
            state = self._state
            if state in (_VALUE, _VALUE_OR_END):
                if state == _VALUE_OR_END and char == ord("]"):
                    self._close(char)
                elif char == ord("{"):
                    self._open({})
                elif char == ord("["):
                    self._open([])
                elif char == ord('"'):
                    path = self._path()
                    if self.stream_at(path):
                        return self._start_stream(path)
                    self._emit(await self._string())
                elif char in _NUMBER_BYTES:
                    self._emit(await self._number(char))
                else:
                    self._emit(await self._literal(char))
            elif state == _KEY_OR_END and char == ord("}"):
                self._close(char)
            elif state in (_KEY_OR_END, _KEY):
                if char != ord('"'):
                    raise MalformedJson("An object key must be a string.")
                await self._key()
            elif state == _COLON:
                if char != ord(":"):
                    raise MalformedJson("Expected ':' after an object key.")
                self._state = _VALUE
            elif state == _AFTER_VALUE:
                if char == ord(","):
                    in_object = isinstance(self._stack[-1].container, dict)
                    self._state = _KEY if in_object else _VALUE
                elif char in (ord("}"), ord("]")):
                    self._close(char)
                else:
                    raise MalformedJson("Expected ',' or a closing bracket.")
            else:  # pragma: no cover - every state is handled above
                raise AssertionError(state)

    def _start_stream(self, path: Path) -> StreamedString:
        if self._streams >= self.max_streams:
            raise MalformedJson(f"More than {self.max_streams} base64 payloads in one body.")
        marker = StreamedString(path, self._streams)
        self._streams += 1
        self._streaming = path
        self._state = _STREAMING
        return marker

    async def stream(self) -> AsyncIterator[bytes]:
        """The current streamed string's characters (unescaped UTF-8), as they arrive."""
        if self._state != _STREAMING or self._streaming is None:
            raise RuntimeError("no streamed string is open")
        path = self._streaming
        while True:
            if not await self._fill():
                raise MalformedJson("A string is not terminated.")
            buf, start = self._buf, self._pos
            quote = buf.find(b'"', start)
            slash = buf.find(b"\\", start)
            end = len(buf)
            if quote != -1:
                end = quote
            if slash != -1 and slash < end:
                end = slash
            piece = buf[start:end]
            if _CONTROL.search(piece):
                raise MalformedJson("A string contains a raw control character.")
            self._pos = end
            if piece:
                yield piece
            if end == len(buf):
                continue
            self._pos = end + 1
            if buf[end] == ord('"'):
                break
            yield await self._escape()
        self._streaming = None
        self._state = _VALUE  # the marker is emitted as this position's value
        self._emit(StreamedString(path, self._streams - 1))

    async def _peek(self, n: int) -> bytes:
        """The next ``n`` unread bytes (fewer at the end), without consuming them."""
        while len(self._buf) - self._pos < n and not self._eof:
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self._eof = True
                break
            # Rare (an escape cut by a chunk boundary): only the short tail is copied.
            self._buf, self._pos = self._buf[self._pos :] + chunk, 0
        return self._buf[self._pos : self._pos + n]

    async def _hex4(self) -> int:
        digits = await self._peek(4)
        if len(digits) < 4:
            raise MalformedJson("A string is not terminated.")
        self._pos += 4
        try:
            return int(digits.decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            raise MalformedJson("A string has an invalid \\u escape.") from None

    async def _escape(self) -> bytes:
        """The bytes of one escape sequence inside a streamed string (backslash consumed)."""
        code = (await self._peek(1))[:1]
        if not code:
            raise MalformedJson("A string is not terminated.")
        self._pos += 1
        simple = _SIMPLE_ESCAPES.get(code[0])
        if simple is not None:
            return simple
        if code != b"u":
            raise MalformedJson("A string has an invalid escape.")
        point = await self._hex4()
        if 0xD800 <= point <= 0xDBFF and await self._peek(2) == b"\\u":
            # A UTF-16 surrogate pair, as JSON writes characters beyond the BMP.
            self._pos += 2
            low = await self._hex4()
            if 0xDC00 <= low <= 0xDFFF:
                point = 0x10000 + ((point - 0xD800) << 10) + (low - 0xDC00)
            else:
                return chr(point).encode("utf-8", "surrogatepass") + chr(low).encode(
                    "utf-8", "surrogatepass"
                )
        # A lone surrogate passes through, as json.loads lets it.
        return chr(point).encode("utf-8", "surrogatepass")

    @property
    def document(self) -> Any:
        """The whole document; only complete once :meth:`next_stream` returned None."""
        if not self._has_root and self._stack:
            return self._stack[0].container
        return self._root

    @property
    def complete(self) -> bool:
        return self._state == _DONE and self._has_root
