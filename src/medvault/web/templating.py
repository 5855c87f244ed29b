"""Jinja2 environment for the portal: autoescaped templates and human-friendly filters."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, get_timezone_location
from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup
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


# The portal speaks British English for now; times read "4 Dec 2026, 5:31 pm".
LOCALE = "en_GB"
_LOCAL_PATTERN = "d MMM y, h:mm a"


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def utc_datetime(value: datetime) -> str:
    """ "4 Dec 2026, 17:31 UTC": the unambiguous form, for tooltips and audit exports."""
    return _aware(value).astimezone(UTC).strftime("%-d %b %Y, %H:%M UTC")


def local_datetime(value: datetime, zone: tzinfo) -> str:
    """ "4 Dec 2026, 5:31 pm" in ``zone``: what a person reads on a letter or a clock."""
    return format_datetime(_aware(value), _LOCAL_PATTERN, tzinfo=zone, locale=LOCALE)


def zone_name(zone: tzinfo) -> str:
    """ "United Kingdom Time", "United States (New York) Time"; UTC stays "UTC"."""
    if isinstance(zone, ZoneInfo) and zone.key not in ("UTC", "Etc/UTC"):
        return str(get_timezone_location(zone, locale=LOCALE))
    return "UTC"


def _zone(context: Context) -> tzinfo:
    zone = context.get("zone")
    return zone if isinstance(zone, tzinfo) else UTC


@pass_context
def when(context: Context, value: datetime | None) -> Markup:
    """A ``<time>`` in the viewer's zone, with the same instant in UTC as its tooltip."""
    if value is None:
        return Markup("")
    return Markup('<time datetime="{iso}" title="{utc}">{local}</time>').format(
        iso=iso(value), utc=utc_datetime(value), local=local_datetime(value, _zone(context))
    )


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
templates.env.filters["when"] = when
templates.env.filters["zone_name"] = zone_name
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
