"""RFC 9457 problem details: every error a client can see is one of these.

Each error kind has a stable ``type`` URI so that clients can branch on it without
parsing prose. The full list is documented in ``docs/problems.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from medvault.kit.redaction import loggable_path

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:medvault:problem:"


class Problem(Exception):
    """An error that is safe to show to the client as-is."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions
        # Server-side only, never serialised: what an access denial should audit.
        self.denial: object | None = None

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug

    def to_dict(self, *, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class MissingFile(Problem):
    status, slug, title = 400, "missing-file", "No file in the request"


class ClientGone(Problem):
    status, slug, title = 400, "client-disconnected", "The client went away mid-request"


class ValidationFailed(Problem):
    status, slug, title = 422, "validation-error", "The request is not valid"


class InvalidCharacters(ValidationFailed):
    status, slug, title = 422, "invalid-characters", "The text holds control characters"


class SearchTooComplex(Problem):
    status, slug, title = 400, "search-too-complex", "The search has too many values or words"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(
            detail, headers={"WWW-Authenticate": 'Bearer realm="medvault"'}, **extensions
        )


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class DuplicatePatient(Problem):
    status, slug, title = 409, "duplicate-patient", "A patient with this identifier exists"


class DuplicateDocument(Problem):
    status, slug, title = 409, "duplicate-document", "This patient already has this document"


class VersionConflict(Problem):
    status, slug, title = 409, "version-conflict", "Another version was added at the same time"


class Gone(Problem):
    status, slug, title = 410, "document-deleted", "The document has been deleted"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "The upload is larger than allowed"


class HeadersTooLarge(Problem):
    status, slug, title = 431, "headers-too-large", "The request head is larger than allowed"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "This type of file is not accepted"


class RangeNotSatisfiable(Problem):
    status, slug, title = 416, "range-not-satisfiable", "The requested range is not satisfiable"


class UnknownPatient(Problem):
    status, slug, title = 422, "unknown-patient", "The patient does not exist"


class SignedUrlInvalid(Problem):
    status, slug, title = 403, "signed-url-invalid", "The download link is not valid"


class SignedUrlExpired(Problem):
    status, slug, title = 403, "signed-url-expired", "The download link has expired"


class IntegrityFailure(Problem):
    status, slug, title = 500, "integrity-failure", "Stored content failed its integrity check"


class KeyUnavailable(Problem):
    status, slug, title = 503, "key-unavailable", "The key for this document is not available here"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "service-unavailable", "A backing service is unavailable"


_STATUS_TO_PROBLEM: dict[int, type[Problem]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.to_dict(instance=instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: pydantic's "input" would echo request data
    # (possibly patient data) back into responses and logs.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _flat_routes(routes: list[Any]) -> list[Any]:
    # FastAPI >= 0.160 nests included routers; their flat contexts carry the path params.
    iterate = getattr(fastapi_routing, "iter_route_contexts", None)
    return list(iterate(routes)) if iterate is not None else routes


def allowed_methods(request: Request) -> str:
    """Every method some route answers at this path, for a 405's ``Allow`` (RFC 9110).

    Starlette lists only the methods of the first route whose path matched, so a PATCH
    to a document said ``Allow: GET`` although DELETE works there too.
    """
    # method -> does a route with no path parameters (a literal path) answer it?
    found: dict[str, bool] = {}
    for method in _METHODS:
        for route in _flat_routes(request.app.router.routes):
            match, child = route.matches({**request.scope, "method": method})
            if match == Match.FULL:
                literal = not child.get("path_params")
                found[method] = found.get(method, False) or literal
    # A literal path such as /fhir/Patient/_search names its own resource: the methods
    # of /fhir/Patient/{id}, which would read "_search" as an id, are not its methods.
    if any(found.values()):
        return ", ".join(method for method, literal in found.items() if literal)
    return ", ".join(found)


ProblemObserver = Callable[[Request, Problem], Awaitable[None]]
# Renders a problem in another dialect (an HTML page, a FHIR OperationOutcome).
ProblemRenderer = Callable[[Problem, Request], Response]


def register_problem_renderer(app: FastAPI, path_prefix: str, renderer: ProblemRenderer) -> None:
    """Answer errors under ``path_prefix`` with ``renderer`` instead of problem+json.

    The longest matching prefix wins, so ``/fhir`` can sit beside a portal mounted at
    ``/``. The problem itself (status, type, audit observer) is decided the same way.
    """
    renderers: dict[str, ProblemRenderer] = getattr(app.state, "problem_renderers", {})
    renderers[path_prefix] = renderer
    app.state.problem_renderers = renderers


def _render(problem: Problem, request: Request) -> Response:
    renderers: dict[str, ProblemRenderer] = getattr(request.app.state, "problem_renderers", {})
    path = request.url.path
    matching = [prefix for prefix in renderers if path.startswith(prefix)]
    if matching:
        return renderers[max(matching, key=len)](problem, request)
    return problem_response(problem, request)


def install_problem_handlers(app: FastAPI, *, observer: ProblemObserver | None = None) -> None:
    """Route every error through problem details; nothing else reaches the client.

    ``observer`` sees every Problem before it is answered (the audit log records
    access denials through it). Paths with a registered renderer get the same problem
    in their own dialect (see ``register_problem_renderer``).
    """

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        if observer is not None:
            await observer(request, exc)
        return _render(exc, request)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        problem_cls = _STATUS_TO_PROBLEM.get(exc.status_code)
        if problem_cls is None:
            problem: Problem = Problem(str(exc.detail))
            problem.status = exc.status_code
            problem.slug = f"http-{exc.status_code}"
            problem.title = HTTPStatus(exc.status_code).phrase
        else:
            detail: str | None = exc.detail if isinstance(exc.detail, str) else None
            if detail and detail.lower() == problem_cls.title.lower():
                detail = None
            problem = problem_cls(detail)
        if exc.headers:
            problem.headers.update(exc.headers)
        if exc.status_code == 405:
            problem.headers["Allow"] = allowed_methods(request)
        return _render(problem, request)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problem = ValidationFailed(
            "One or more fields are missing or invalid.", errors=_validation_errors(exc)
        )
        return _render(problem, request)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        # Nobody is listening for this response; the upload was already cleaned up.
        logger.info(
            "client disconnected during %s %s", request.method, loggable_path(request.url.path)
        )
        return _render(ClientGone(), request)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # The traceback goes to the server log only; the client gets an opaque problem.
        logger.exception(
            "unhandled error on %s %s", request.method, loggable_path(request.url.path)
        )
        return _render(Problem("An unexpected error occurred."), request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
