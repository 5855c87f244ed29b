"""The app-wide check that no path or query parameter carries control characters."""

from __future__ import annotations

from starlette.requests import Request

from medvault.kit.text import require_clean_text


async def refuse_control_characters(request: Request) -> None:
    """Refuse NUL and other controls in the path and every query parameter with 422.

    Installed once on the app, before any route's own dependencies: ``q``, the audit
    ``actor`` filter, FHIR search parameters and raw-upload metadata are all covered,
    including parameters a route added later forgets to type.
    """
    items: list[tuple[str, str | None]] = [("path", request.scope.get("path", ""))]
    for name, value in request.query_params.multi_items():
        items.append(("query parameter name", name))
        items.append((name, value))
    require_clean_text(items)
