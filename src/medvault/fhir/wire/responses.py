"""The HTTP side of FHIR formats and errors: how an answer under ``/fhir`` leaves.

Which JSON media type a request gets (``_format`` and ``Accept`` negotiation), the
JSON response itself, and the renderer that answers every problem as an
OperationOutcome. A request that can only take XML or Turtle gets a 406
OperationOutcome rather than JSON it did not ask for. ``application/json`` is answered
as ``application/json`` (some clients insist); everything else gets
``application/fhir+json``.

The formats (``wire/media.py``) and OperationOutcome problem types and bodies
(``wire/outcome.py``) import no HTTP framework, so resource mapping, repositories and
transactions use them without loading Starlette; this module is where they meet it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from medvault.fhir.wire.media import (
    FHIR_JSON,
    JSON_FORMATS,
    PLAIN_JSON,
    NotAcceptable,
    dumps,
    media_ranges,
)
from medvault.fhir.wire.outcome import problem_outcome
from medvault.kit.problems import Problem


def _format_param(request: Request) -> str | None:
    value = request.query_params.get("_format")
    return value.strip().lower().split(";")[0].strip() if value else None


def json_quality(request: Request) -> float:
    """How much the client wants FHIR JSON (explicit JSON types only, not ``*/*``)."""
    requested = _format_param(request)
    if requested is not None:
        return 1.0 if requested in JSON_FORMATS else 0.0
    accept = request.headers.get("accept", "")
    return max((q for media, q in media_ranges(accept) if media in JSON_FORMATS), default=0.0)


def negotiate(request: Request) -> str:
    """The media type of a FHIR resource response, or 406 if the client takes no JSON."""
    requested = _format_param(request)
    if requested is not None:
        if requested not in JSON_FORMATS:
            raise NotAcceptable(
                f"This server speaks FHIR JSON only; _format={requested} is not available. "
                "Use _format=json."
            )
        return PLAIN_JSON if requested == PLAIN_JSON else FHIR_JSON
    ranges = [(media, q) for media, q in media_ranges(request.headers.get("accept", "")) if q > 0]
    if not ranges:
        return FHIR_JSON
    medias = {media for media, _ in ranges}
    if medias & {FHIR_JSON, "application/json+fhir", "*/*", "application/*"}:
        return FHIR_JSON
    if medias & {PLAIN_JSON, "text/json"}:
        return PLAIN_JSON
    raise NotAcceptable("This server speaks FHIR JSON only: send Accept: application/fhir+json.")


def wants_resource_form(request: Request, content_type: str) -> bool:
    """For Binary: the FHIR resource form (base64) rather than the raw bytes?

    Only an explicit JSON type in ``Accept`` or ``_format`` asks for the resource form;
    ``*/*``, a browser's Accept, or the document's own type get the raw bytes, as FHIR
    prescribes. On a tie (both named with the same q), JSON wins: a client that names
    FHIR JSON at all is a FHIR client.
    """
    wanted_json = json_quality(request)
    if wanted_json <= 0:
        return False
    if _format_param(request) is not None:
        return True
    family = content_type.split("/", 1)[0] + "/*"
    raw = max(
        (
            q
            for media, q in media_ranges(request.headers.get("accept", ""))
            if media in (content_type, family, "*/*")
        ),
        default=0.0,
    )
    return wanted_json >= raw


def fhir_response(
    resource: Mapping[str, Any] | None,
    *,
    status: int = 200,
    media_type: str = FHIR_JSON,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A FHIR JSON response (``resource`` None: an empty body, e.g. Prefer: return=minimal)."""
    body = b"" if resource is None else dumps(resource)
    return Response(
        body,
        status_code=status,
        headers=dict(headers or {}),
        media_type=f"{media_type}; charset=utf-8",
    )


def render_operation_outcome(problem: Problem, request: Request) -> Response:
    """Problem renderer for ``/fhir`` (see ``kit.problem_handlers.register_problem_renderer``)."""
    return fhir_response(
        problem_outcome(problem),
        status=problem.status,
        media_type=FHIR_JSON,
        headers=problem.headers,
    )
