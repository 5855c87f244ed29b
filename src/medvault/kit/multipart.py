"""Streaming multipart/form-data parsing with bounded memory.

Starlette's ``request.form()`` spools file parts to temporary files, which would put
plaintext clinical data on the server's disk and read it twice. This parser hands
file bytes to the caller as they arrive, and keeps only small text fields in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from medvault.kit.i18n import N_, msg
from medvault.kit.problems import BadRequest

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 50


class MalformedMultipart(BadRequest):
    slug, title = "malformed-multipart", N_("The multipart body could not be parsed")


@dataclass
class FormField:
    name: str
    value: str


@dataclass
class FilePartStart:
    name: str
    filename: str
    content_type: str | None


@dataclass
class FileChunk:
    data: bytes


@dataclass
class FilePartEnd:
    pass


MultipartEvent = FormField | FilePartStart | FileChunk | FilePartEnd


@dataclass
class _PartState:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    is_file: bool = False
    name: str = ""
    value: bytearray = field(default_factory=bytearray)


def boundary_from_content_type(content_type: str) -> bytes:
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data" or b"boundary" not in params:
        raise MalformedMultipart(N_("Expected multipart/form-data with a boundary."))
    return params[b"boundary"]


async def iter_multipart(
    body: AsyncIterator[bytes], boundary: bytes
) -> AsyncIterator[MultipartEvent]:
    """Yield fields and file chunks in body order."""
    events: list[MultipartEvent] = []
    state = _PartState()
    field_count = 0

    def on_part_begin() -> None:
        nonlocal state
        state = _PartState()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[bytes(state.header_field).lower()] = bytes(state.header_value)
        state.header_field.clear()
        state.header_value.clear()

    def on_headers_finished() -> None:
        nonlocal field_count
        field_count += 1
        if field_count > MAX_FIELDS:
            raise MalformedMultipart(msg("More than {limit} parts in the form.", limit=MAX_FIELDS))
        _, options = parse_options_header(state.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise MalformedMultipart(N_("A form part has no name."))
        state.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            state.is_file = True
            raw_type = state.headers.get(b"content-type")
            events.append(
                FilePartStart(
                    name=state.name,
                    filename=options[b"filename"].decode("utf-8", "replace"),
                    content_type=raw_type.decode("latin-1") if raw_type else None,
                )
            )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.is_file:
            events.append(FileChunk(data[start:end]))
            return
        state.value += data[start:end]
        if len(state.value) > MAX_FIELD_BYTES:
            raise MalformedMultipart(
                msg("Form field {name} is larger than 64 KiB.", name=repr(state.name))
            )

    def on_part_end() -> None:
        if state.is_file:
            events.append(FilePartEnd())
        else:
            try:
                events.append(FormField(state.name, state.value.decode("utf-8")))
            except UnicodeDecodeError:
                raise MalformedMultipart(
                    msg("Form field {name} is not UTF-8.", name=repr(state.name))
                ) from None

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    async for chunk in body:
        try:
            parser.write(chunk)
        except MalformedMultipart:
            raise
        except Exception as exc:  # the parser raises its own error types on bad framing
            raise MalformedMultipart(N_("The multipart framing is broken.")) from exc
        # Merge consecutive file chunks so downstream work happens in larger batches.
        merged: list[MultipartEvent] = []
        for event in events:
            if isinstance(event, FileChunk) and merged and isinstance(merged[-1], FileChunk):
                merged[-1] = FileChunk(merged[-1].data + event.data)
            else:
                merged.append(event)
        events.clear()
        for event in merged:
            yield event
    try:
        parser.finalize()
    except Exception as exc:
        raise MalformedMultipart(N_("The multipart body ended early.")) from exc
    for event in events:
        yield event
