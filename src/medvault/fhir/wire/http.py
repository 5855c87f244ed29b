"""HTTP details shared by the FHIR routes: parameters, Prefer, bodies, response headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from medvault.fhir.wire.json_stream import StreamingJsonReader
from medvault.fhir.wire.media import FHIR_JSON, JSON_FORMATS
from medvault.fhir.wire.outcome import information
from medvault.fhir.wire.responses import fhir_response
from medvault.fhir.wire.validation import validate_structure
from medvault.kit.problems import PayloadTooLarge, UnsupportedMediaType
from medvault.kit.text import require_clean_text

MAX_SEARCH_FORM_BYTES = 64 * 1024


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences (``return``, ``handling``) as a dict."""
    found = {}
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            found[name.strip().lower()] = value.strip().strip('"').lower()
    return found


def strict(request: Request) -> bool:
    return prefer(request).get("handling") == "strict"


def query_params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


async def search_params(request: Request) -> list[tuple[str, str]]:
    """``POST [type]/_search``: the form body's parameters plus the URL's."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SEARCH_FORM_BYTES:
            raise PayloadTooLarge(
                f"A search form is at most {MAX_SEARCH_FORM_BYTES} bytes.",
                max_bytes=MAX_SEARCH_FORM_BYTES,
            )
    try:
        form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise UnsupportedMediaType("The search form is not UTF-8.") from None
    # The URL's parameters were checked app-wide; the form's are checked here, blank
    # ones included (as the app-wide check does): a parameter ignored for its empty
    # value is still a request that carried a control character.
    require_clean_text([item for pair in form for item in (("parameter name", pair[0]), pair)])
    return query_params(request) + [(name, value) for name, value in form if value]


def is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in JSON_FORMATS


def require_json(request: Request) -> None:
    if not is_json(request):
        raise UnsupportedMediaType("Send the resource as application/fhir+json.")


async def read_resource(body: AsyncIterator[bytes], *, expected: str) -> dict[str, Any]:
    """A small resource body (no base64 payloads), parsed with bounded memory."""
    reader = StreamingJsonReader(body, stream_at=lambda path: False, max_streams=0)
    await reader.next_stream()
    return validate_structure(reader.document, expected=expected)


def http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)


def written(
    request: Request,
    resource: dict[str, Any],
    *,
    status: int,
    media_type: str = FHIR_JSON,
    headers: dict[str, str] | None = None,
    message: str,
) -> Response:
    """A create/update response honouring Prefer: return=minimal|representation|OperationOutcome."""
    wanted = prefer(request).get("return", "representation")
    if wanted == "minimal":
        return fhir_response(None, status=status, media_type=media_type, headers=headers)
    if wanted == "operationoutcome":
        return fhir_response(
            information(message), status=status, media_type=media_type, headers=headers
        )
    return fhir_response(resource, status=status, media_type=media_type, headers=headers)
