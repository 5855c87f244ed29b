"""Jinja2 environment for the portal: autoescaped templates and human-friendly filters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

TEMPLATES_DIR = Path(__file__).parent / "templates"

# Pages allow only the portal's own scripts, styles and images: no inline script, no
# inline style, nothing from another origin. ``frame-src 'self'`` lets the Create
# Document preview show the PDF the server rendered.
PORTAL_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

_UNITS = ("bytes", "KB", "MB", "GB", "TB")


def human_size(size: int | None) -> str:
    """1536 → "1.5 KB". Decimal units, as operating systems show file sizes."""
    if size is None:
        return ""
    if size < 1000:
        return "1 byte" if size == 1 else f"{size} bytes"
    value = float(size)
    for unit in _UNITS[1:]:
        value /= 1000
        if value < 1000 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def human_datetime(value: datetime | None) -> str:
    """ "23 Nov 2026, 14:05 UTC": unambiguous in every locale (no 11/12 vs 12/11)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")


def human_date(value: Any) -> str:
    if value is None:
        return ""
    return f"{value.day} {value.strftime('%b %Y')}"


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["human_size"] = human_size
templates.env.filters["human_datetime"] = human_datetime
templates.env.filters["human_date"] = human_date
templates.env.filters["iso"] = iso
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """A portal page with the portal's Content-Security-Policy and no caching."""
    values: dict[str, Any] = dict(getattr(request.state, "portal_context", {}))
    values.update(context or {})
    response = templates.TemplateResponse(request, template, values, status_code=status_code)
    response.headers["Content-Security-Policy"] = PORTAL_CSP
    return response
