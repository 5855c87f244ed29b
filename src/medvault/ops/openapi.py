"""The OpenAPI document, made to tell the truth about every answer the vault gives.

FastAPI documents the success response and a 422 per route; the vault answers far
more (401/403 from the access policy, 404 for ids, 413/431 from the request limits,
problem+json or an OperationOutcome for every error, document bytes with 206/304/416
on content routes). Rather than repeat ``responses=`` on sixty decorators, this module
derives the common answers from what a route *is* (does it authenticate, take a body,
have path parameters, count against a rate limit) and adds the few special answers
from one table, checked against the routes when the document is built so that a
renamed route cannot silently lose its documentation.

Request schemas are tightened the same way: every free-text string the app checks
for control characters (path, query, form and JSON bodies) gets the pattern the check
enforces, so a generated request the schema calls valid is one the server accepts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from medvault import deps
from medvault.kit.problems import PROBLEM_MEDIA_TYPE

JsonSchema = dict[str, Any]

# The same characters kit.text refuses (C0 but tab/LF/CR, DEL, C1), as an ECMA-262
# pattern. Surrogates are left out: they cannot appear in UTF-8 text on the wire.
CLEAN_TEXT_PATTERN = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"

PROBLEM_SCHEMA: JsonSchema = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details. Branch on `type` (stable, listed in "
    "docs/problems.md); some types add extension members, e.g. `errors` on "
    "validation-error, `max_bytes` on payload-too-large.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:medvault:problem:not-found"]},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}

STATUS_TEXT = {
    304: "Not modified: the client's copy (If-None-Match) is current",
    400: "Bad request (malformed input, opaque cursor or link not valid)",
    401: "Authentication required, or the token is not valid",
    403: "Not allowed by the access policy",
    404: "Not found, or not within the caller's reach",
    406: "No acceptable representation",
    409: "Conflicts with the current state",
    410: "The document is deleted, or the upload expired or was refused for good",
    412: "A precondition failed (If-Match; for uploads, Tus-Resumable is not 1.0.0)",
    413: "The body is larger than allowed",
    415: "The body's media type or content is not accepted",
    416: "The range cannot be satisfied",
    422: "The request is not valid (fields, control characters, references)",
    423: "Another request is appending to this upload: retry shortly",
    428: "A precondition (If-Match) is required",
    429: "Rate limited: retry after `Retry-After` seconds",
    431: "The request head is larger than allowed",
    500: "Unexpected error, or stored content failed its integrity check",
    503: "A backing service (database, storage, keyring) is unavailable, or login is busy",
    460: "The bytes do not match Upload-Checksum (tus checksum extension): none were kept",
}

# Statuses whose answer carries a Retry-After header.
_RETRY_AFTER = {429, 503}


@dataclass(frozen=True)
class Dialect:
    """How the routes under ``prefix`` answer: FHIR speaks OperationOutcome, not RFC 9457.

    ``error_schema`` names a component added to the document; ``success_media_types``
    replace ``application/json`` on every 2xx answer with a body.
    """

    prefix: str
    error_media_types: tuple[str, ...]
    error_schema_name: str
    error_schema: JsonSchema
    success_media_types: tuple[str, ...]
    success_schema: JsonSchema
    extra_statuses: frozenset[int] = frozenset()
    components: Mapping[str, JsonSchema] = field(default_factory=dict)


@dataclass(frozen=True)
class Special:
    """What one route answers beyond the common set, and what its body really is."""

    statuses: frozenset[int] = frozenset()
    # Statuses with a body in the route's *success* media types (e.g. 206 bytes).
    content_statuses: Mapping[int, str] = field(default_factory=dict)
    success_media_types: tuple[str, ...] | None = None
    success_schema: JsonSchema | None = None
    success_headers: Mapping[str, JsonSchema] = field(default_factory=dict)
    request_body: JsonSchema | None = None
    # Parameter name -> schema keywords merged into the declared parameter's schema.
    parameters: Mapping[str, JsonSchema] = field(default_factory=dict)
    optional_auth: bool = False


# A table keyed by (method, path); a callable receives the app, for settings-driven types.
SpecialTable = Mapping[tuple[str, str], Special | Callable[[FastAPI], Special]]
# (component, property) -> keywords: rules a service enforces that its model does not state.
ConstraintTable = Mapping[tuple[str, str], JsonSchema]


def install_openapi(
    app: FastAPI,
    *,
    specials: SpecialTable,
    dialects: tuple[Dialect, ...] = (),
    constraints: ConstraintTable | None = None,
) -> None:
    """Replace ``app.openapi`` with the truthful document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            augment(
                schema, app, specials=specials, dialects=dialects, constraints=constraints or {}
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route with its effective path (FastAPI ≥ 0.160 nests included routers)."""
    iterate = getattr(routing, "iter_route_contexts", None)
    if iterate is None:
        yield from (route for route in app.routes if isinstance(route, APIRoute))
        return
    for context in iterate(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


@dataclass(frozen=True)
class _Traits:
    auth: str  # "required", "optional" (a bad token is 401) or "lenient"/"none"
    rate_limited: bool
    touches_databases: bool


def _traits(route: Any) -> _Traits:
    calls = set(_calls(route.dependant))
    if deps.get_principal in calls:
        auth = "required"
    elif deps.get_optional_principal in calls:
        auth = "optional"
    elif deps.get_principal_if_valid in calls:
        auth = "lenient"
    else:
        auth = "none"
    database_deps = {
        deps.get_clinical_session,
        deps.get_auth_session,
        deps.get_auth_read_session,
        deps.get_runtime,
    }
    return _Traits(
        auth=auth,
        rate_limited=bool(calls & {deps.limit_uploads, deps.get_rate_limits}),
        touches_databases=auth != "none" or bool(calls & database_deps),
    )


def _operation_statuses(
    route: Any, method: str, operation: dict[str, Any], special: Special | None
) -> set[int]:
    traits = _traits(route)
    # Every route: the app-wide control-character check (422), the head limit (431)
    # and the last-resort handler (500).
    statuses = {422, 431, 500}
    if traits.auth in ("required", "optional"):
        statuses.add(401)
    if traits.auth == "required":
        statuses.add(403)  # the access policy, break-glass refusals
    if traits.touches_databases:
        statuses.add(503)
    if "{" in route.path:
        statuses.add(404)
    if traits.rate_limited:
        statuses.add(429)
    if "requestBody" in operation or method in ("POST", "PUT"):
        statuses |= {400, 413}
    if any(p.get("name") == "cursor" for p in operation.get("parameters", [])):
        statuses.add(400)  # an opaque cursor that is not one the server issued
    if special is not None:
        statuses |= special.statuses
    return statuses


def _resolve(entry: Special | Callable[[FastAPI], Special], app: FastAPI) -> Special:
    return entry if isinstance(entry, Special) else entry(app)


def augment(
    schema: dict[str, Any],
    app: FastAPI,
    *,
    specials: SpecialTable,
    dialects: tuple[Dialect, ...] = (),
    constraints: ConstraintTable | None = None,
) -> None:
    """Add every answer and constraint the routes really have to ``schema`` in place."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for dialect in dialects:
        components[dialect.error_schema_name] = dialect.error_schema
        components.update(dialect.components)
    unused = set(specials)
    for route in _api_routes(app):
        if not route.include_in_schema:
            continue
        path_item = schema["paths"].get(route.path_format)
        if path_item is None:
            continue
        for method in sorted(route.methods):
            operation = path_item.get(method.lower())
            if operation is None:
                continue
            key = (method, route.path_format)
            entry = specials.get(key)
            unused.discard(key)
            special = _resolve(entry, app) if entry is not None else None
            face = next((d for d in dialects if route.path.startswith(d.prefix)), None)
            _document_operation(route, method, operation, special, face)
    if unused:
        # A renamed or removed route must not leave its special answers behind unnoticed.
        raise RuntimeError(f"OpenAPI specials name no route: {sorted(unused)}")
    for (component, prop), keywords in (constraints or {}).items():
        owner = components.get(component, {})
        target = owner if prop == "" and owner else owner.get("properties", {}).get(prop)
        if target is None:
            raise RuntimeError(f"OpenAPI constraint names no property: {component}.{prop}")
        if prop == "":
            target.update(keywords)
        else:
            _merge_into_string(target, keywords)
    _tighten_strings(schema)


def _merge_into_string(schema: JsonSchema, keywords: JsonSchema) -> None:
    """Add ``keywords`` where the string is: the schema itself, or its string branch
    (``anyOf: [string, null]`` for optional values), so generators see one pattern."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") == "string"]
    for target in branches or [schema]:
        target.update(keywords)


def _document_operation(
    route: Any,
    method: str,
    operation: dict[str, Any],
    special: Special | None,
    dialect: Dialect | None,
) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if special is not None and special.request_body is not None:
        operation["requestBody"] = copy.deepcopy(special.request_body)
    statuses = _operation_statuses(route, method, operation, special)
    if dialect is not None:
        statuses |= dialect.extra_statuses
    error_types = dialect.error_media_types if dialect else (PROBLEM_MEDIA_TYPE,)
    error_ref = {
        "$ref": f"#/components/schemas/{dialect.error_schema_name if dialect else 'Problem'}"
    }
    success_types: tuple[str, ...] | None = None
    success_schema: JsonSchema | None = None
    if special is not None and special.success_media_types is not None:
        success_types, success_schema = special.success_media_types, special.success_schema
    elif dialect is not None:
        success_types, success_schema = dialect.success_media_types, dialect.success_schema
    for code, response in list(responses.items()):
        if code.startswith("2") and success_types is not None and response.get("content"):
            response["content"] = {
                media: {"schema": copy.deepcopy(success_schema or {})} for media in success_types
            }
        if code.startswith("2") and special is not None and special.success_headers:
            response.setdefault("headers", {}).update(
                {name: {"schema": s} for name, s in special.success_headers.items()}
            )
    if special is not None:
        for status, description in special.content_statuses.items():
            if status == 304:
                responses[str(status)] = {"description": description}
                continue
            responses[str(status)] = {
                "description": description,
                "content": {
                    media: {"schema": copy.deepcopy(success_schema or {})}
                    for media in (success_types or ("application/json",))
                },
            }
    documented_bodies = set(special.content_statuses) if special is not None else set()
    for status in sorted(statuses - documented_bodies):
        error: dict[str, Any] = {
            "description": STATUS_TEXT.get(status, "Error"),
            "content": {media: {"schema": error_ref} for media in error_types},
        }
        if status in _RETRY_AFTER:
            error["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        # FastAPI's own 422 points at HTTPValidationError, a shape the vault never sends.
        responses[str(status)] = error
    if special is not None:
        for parameter in operation.get("parameters", []):
            extra = dict(special.parameters.get(parameter["name"], {}))
            if not extra:
                continue
            if "description" in extra:
                parameter["description"] = extra.pop("description")
            if "required" in extra:  # a header the route checks itself (tus: 412, 400)
                parameter["required"] = extra.pop("required")
            if "anyOf" in extra or "type" in extra:
                parameter["schema"] = extra  # a whole schema: replaces FastAPI's
            else:
                _merge_into_string(parameter.setdefault("schema", {}), extra)
        if special.optional_auth:
            operation["security"] = [{}, *operation.get("security", [])]


def _tighten_strings(schema: dict[str, Any]) -> None:
    """Give every free-text string the control-character pattern the server enforces."""
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") in ("path", "query"):
                    _add_pattern(parameter.get("schema", {}))
            body = operation.get("requestBody", {}).get("content", {})
            for media_type, media in body.items():
                if media_type in ("application/json", "multipart/form-data") or media_type.endswith(
                    "x-www-form-urlencoded"
                ):
                    _add_pattern(media.get("schema", {}))
    # Request models live in components; response models are left alone (they are
    # answers, and a pattern on them would only tell clients what they never get).
    components = schema.get("components", {}).get("schemas", {})
    for name in _request_components(schema):
        _add_pattern(components[name])


_REF = "#/components/schemas/"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            yield ref[len(_REF) :]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _request_components(schema: dict[str, Any]) -> set[str]:
    """Components reachable from a request body (transitively, through nested refs)."""
    components = schema.get("components", {}).get("schemas", {})
    pending = [
        name
        for path_item in schema["paths"].values()
        for operation in path_item.values()
        for name in _refs(operation.get("requestBody", {}))
    ]
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found or name not in components:
            continue
        found.add(name)
        pending.extend(_refs(components[name]))
    return found


def _add_pattern(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _add_pattern(item)
        return
    if not isinstance(node, dict):
        return
    is_free_text = (
        node.get("type") == "string"
        and "pattern" not in node
        and "format" not in node
        and "enum" not in node
        and "const" not in node
    )
    if is_free_text:
        node["pattern"] = CLEAN_TEXT_PATTERN
    for key, value in node.items():
        if key in ("properties", "$defs", "patternProperties"):
            for sub in value.values():
                _add_pattern(sub)
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "not"):
            _add_pattern(value)
