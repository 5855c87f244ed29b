"""FastAPI's dependency trees, built once per test process instead of once per app.

FastAPI analyses every route's endpoint the first time a request reaches its router in
an app: the signature, each parameter's pydantic adapter, and the whole tree of
dependencies below it, again for every route that shares them. A vault process does
that once. The suite makes a fresh app for almost every test, and paid it again each
time: with py-spy over tests/fhir and tests/access, 18% of all samples were in
``get_dependant``, 0.1 to 0.5 s per test.

``get_dependant`` is a function of its arguments: the endpoint (a module-level function
or class, the same object in every app) and the route's path and scopes. Its result is
only changed by its caller, which puts the route's own dependencies at the front of the
``dependencies`` list. So the memo hands out a copy with a list of its own, and caches
nothing for a callable it cannot hold weakly (a closure made per app is simply rebuilt).
``test_memoised_dependants_match_fresh_ones`` (tests/openapi) checks, for every route
of the app, that the memo's tree equals one FastAPI builds from scratch.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

from fastapi import routing
from fastapi.dependencies import models, utils

_ORIGINAL = utils.get_dependant
_CACHE: weakref.WeakKeyDictionary[Callable[..., Any], dict[tuple[Any, ...], models.Dependant]] = (
    weakref.WeakKeyDictionary()
)


def _key(arguments: dict[str, Any]) -> tuple[Any, ...]:
    frozen = []
    for name in sorted(arguments):
        value = arguments[name]
        frozen.append((name, tuple(value) if isinstance(value, list) else value))
    return tuple(frozen)


def memoised_get_dependant(*, call: Callable[..., Any], **arguments: Any) -> models.Dependant:
    try:
        per_call = _CACHE.setdefault(call, {})
        key = _key(arguments)
        hash(key)
    except TypeError:  # a callable without weak references, or an unhashable argument
        return _ORIGINAL(call=call, **arguments)
    built = per_call.get(key)
    if built is None:
        built = per_call[key] = _ORIGINAL(call=call, **arguments)
    return dataclasses.replace(built, dependencies=list(built.dependencies))


def install() -> bool:
    """Route FastAPI's calls through the memo; False (and nothing changed) if FastAPI's
    internals are not the ones this was written against."""
    if not (
        getattr(routing, "get_dependant", None) is _ORIGINAL
        and dataclasses.is_dataclass(models.Dependant)
        and "dependencies" in {field.name for field in dataclasses.fields(models.Dependant)}
    ):
        return False
    # utils' own recursive calls (sub-dependencies) look the name up in utils.
    utils.get_dependant = memoised_get_dependant
    routing.get_dependant = memoised_get_dependant  # type: ignore[attr-defined]
    return True


def fresh_dependant(**arguments: Any) -> models.Dependant:
    """What FastAPI itself builds, bypassing the memo (for the check that they agree)."""
    utils.get_dependant = _ORIGINAL
    try:
        return _ORIGINAL(**arguments)
    finally:
        utils.get_dependant = memoised_get_dependant
