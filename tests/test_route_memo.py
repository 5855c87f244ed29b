"""The suite's memo of FastAPI's dependency trees (tests/support/route_building.py)
hands every route of the vault the same tree FastAPI builds from scratch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from medvault.app import create_app
from medvault.runtime import Runtime
from tests.conftest import ROUTE_MEMO
from tests.support.route_building import fresh_dependant, memoised_get_dependant


def _api_routes(routes: list[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)  # an included router
        if inner is not None:
            yield from _api_routes(inner.routes)


def _shape(dependant: Dependant) -> tuple[Any, ...]:
    """Everything a request's handling reads from a tree, as comparable values."""

    def fields(kind: str) -> tuple[Any, ...]:
        return tuple(
            (f.name, f.alias, f.mode, repr(f.field_info.annotation), f.field_info.is_required())
            for f in getattr(dependant, kind)
        )

    return (
        dependant.call,
        dependant.name,
        dependant.path,
        dependant.use_cache,
        dependant.scope,
        tuple(dependant.own_oauth_scopes or ()),
        tuple(dependant.parent_oauth_scopes or ()),
        dependant.request_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        *(fields(kind) for kind in ("path_params", "query_params", "header_params")),
        *(fields(kind) for kind in ("cookie_params", "body_params")),
        tuple(_shape(sub) for sub in dependant.dependencies),
    )


def test_memoised_dependants_match_fresh_ones(runtime: Runtime) -> None:
    assert ROUTE_MEMO, "FastAPI's internals changed: tests/support/route_building.py is off"
    app: FastAPI = create_app(runtime=runtime)
    routes = list(_api_routes(app.router.routes))
    assert len(routes) > 100  # REST, FHIR and the portal
    for route in routes:
        arguments: dict[str, Any] = {
            "path": route.path_format,
            "call": route.endpoint,
            "scope": "function",
        }
        first = memoised_get_dependant(**arguments)
        again = memoised_get_dependant(**arguments)
        assert _shape(first) == _shape(again) == _shape(fresh_dependant(**arguments)), route
        # The caller's insertions into one copy never reach the next route's.
        first.dependencies.insert(0, Dependant(call=print))
        assert _shape(memoised_get_dependant(**arguments)) == _shape(again), route
