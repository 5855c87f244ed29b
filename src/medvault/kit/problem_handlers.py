"""The HTTP side of problem details: every error leaves as a problem response.

The problem types themselves live in ``kit/problems.py`` with no HTTP import, so
services can raise them; this module is wired into the app once
(``install_problem_handlers``) and lets the FHIR API and the portal answer the same
problem in their own dialect (``register_problem_renderer``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from medvault.kit.i18n import N_
from medvault.kit.problems import (
    PROBLEM_MEDIA_TYPE,
    BadRequest,
    ClientGone,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Problem,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from medvault.kit.redaction import loggable_path

logger = logging.getLogger(__name__)

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


def problem_response(
    problem: Problem,
    request: Request | None = None,
    *,
    words: Callable[[str], str] | None = None,
) -> JSONResponse:
    """The problem as problem+json; ``words`` rewords its title and detail (the portal's
    scripts show them to a person, in the page's language), nothing else."""
    instance = request.url.path if request is not None else None
    body = problem.to_dict(instance=instance)
    if words is not None:
        body["title"] = words(problem.title)
        if problem.detail:
            body["detail"] = words(problem.detail)
    return JSONResponse(
        body,
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
            N_("One or more fields are missing or invalid."), errors=_validation_errors(exc)
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
        return _render(Problem(N_("An unexpected error occurred.")), request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    # OperationalError: refused, dropped or timed-out connections (and SQLite's locks);
    # InterfaceError: a connection already closed under the driver; PoolTimeout: no
    # connection free in time. Errors of the statements themselves stay 500s.
    for error in (OperationalError, InterfaceError, PoolTimeout):
        answer_outage(
            app,
            error,
            lambda: DatabaseUnavailable(N_("A database did not answer; try again shortly.")),
            outage=database_outage,
        )
    app.add_exception_handler(Exception, on_unexpected)


# SQLite reports a broken statement ("no such table", a syntax error) with the same
# OperationalError as a busy or unreadable file: only these words mean "try again".
_SQLITE_OUTAGES = ("locked", "busy", "unable to open", "disk i/o", "readonly", "full")


def database_outage(exc: Exception) -> bool:
    """Whether a database error says the database is unreachable or busy (not a bug)."""
    cause = getattr(exc, "orig", None)
    if isinstance(cause, sqlite3.Error):
        return any(word in str(cause).lower() for word in _SQLITE_OUTAGES)
    return True


def answer_outage(
    app: FastAPI,
    error: type[Exception],
    problem: Callable[[], Problem],
    *,
    outage: Callable[[Exception], bool] = lambda _: True,
) -> None:
    """Answer ``error``, raised anywhere below a route, as ``problem()`` (a 503).

    An unreachable database or store is an outage, not a bug: the client gets a 503
    with ``Retry-After`` and the connection pools recover by themselves once it is
    back. An ``error`` that ``outage`` says is not one stays a 500. Only the class
    names are logged: a driver's message names hosts, users and buckets.
    """

    async def on_outage(request: Request, exc: Exception) -> Response:
        if not outage(exc):
            logger.exception(
                "unhandled error on %s %s", request.method, loggable_path(request.url.path)
            )
            return _render(Problem(N_("An unexpected error occurred.")), request)
        cause = getattr(exc, "orig", None) or exc.__cause__ or exc
        logger.error(
            "%s on %s %s: %s",
            type(exc).__name__,
            request.method,
            loggable_path(request.url.path),
            type(cause).__name__,
        )
        return _render(problem(), request)

    app.add_exception_handler(error, on_outage)
