"""Jinja2 environment for the portal: autoescaped templates and human-friendly filters."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, get_timezone_location
from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, pass_context
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.responses import HTMLResponse

from medvault.kit import i18n
from medvault.kit.i18n import N_, gettext, ngettext
from medvault.web.script_messages import script_messages, viewer_words

TEMPLATES_DIR = Path(__file__).parent / "templates"

# Pages allow only the portal's own scripts, styles and images: no inline script, no
# inline style, nothing from another origin. ``frame-src 'self'`` lets the Create
# Document preview show the PDF the server rendered.
PORTAL_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

_UNITS = (N_("KB"), N_("MB"), N_("GB"), N_("TB"))


def human_size(size: int | None) -> str:
    """1536 → "1.5 KB". Decimal units, as operating systems show file sizes."""
    if size is None:
        return ""
    if size < 1000:
        return ngettext("%(num)s byte", "%(num)s bytes", size)
    value = float(size)
    for unit in _UNITS:
        value /= 1000
        if value < 1000 or unit == _UNITS[-1]:
            shown = f"{value:.1f}" if value < 100 else f"{value:.0f}"
            return f"{shown} {gettext(unit)}"
    raise AssertionError("unreachable")


# Times read "4 Dec 2026, 5:31 pm" in English (as people write them on letters) and
# "4 Rhag 2026, 17:31" in Welsh (Welsh public services write the 24-hour clock; CLDR's
# short Welsh day period is an English "PM"). Month names are the reader's language's.
_LOCAL_PATTERNS = {"en": "d MMM y, h:mm a", "cy": "d MMM y, HH:mm"}


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def utc_datetime(value: datetime) -> str:
    """ "4 Dec 2026, 17:31 UTC": the unambiguous form, for tooltips and audit exports."""
    moment = _aware(value).astimezone(UTC)
    return (
        f"{format_datetime(moment, 'd MMM y, HH:mm', tzinfo=UTC, locale=i18n.babel_locale())} UTC"
    )


def local_datetime(value: datetime, zone: tzinfo) -> str:
    """ "4 Dec 2026, 5:31 pm" in ``zone``: what a person reads on a letter or a clock."""
    pattern = _LOCAL_PATTERNS.get(i18n.current_language(), _LOCAL_PATTERNS["en"])
    return format_datetime(_aware(value), pattern, tzinfo=zone, locale=i18n.babel_locale())


def zone_name(zone: tzinfo) -> str:
    """ "United Kingdom Time", "United States (New York) Time"; UTC stays "UTC"."""
    if isinstance(zone, ZoneInfo) and zone.key not in ("UTC", "Etc/UTC"):
        return str(get_timezone_location(zone, locale=i18n.babel_locale()))
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
    return str(format_date(value, "d MMM y", locale=i18n.babel_locale()))


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, extensions=["jinja2.ext.i18n"]
    )
)
# Every word a page shows goes through the catalogue of the request's language
# (kit.i18n). Newstyle: ``_("%(n)s files", n=3)`` escapes and fills in like Jinja does.
templates.env.install_gettext_callables(  # type: ignore[attr-defined]
    gettext=gettext, ngettext=i18n.plural_form, newstyle=True
)
# Whitespace inside {% trans %} blocks folds to single spaces, so templates can wrap.
templates.env.policies["ext.i18n.trimmed"] = True
templates.env.globals["current_language"] = i18n.current_language
templates.env.globals["languages"] = i18n.LANGUAGES
templates.env.globals["script_messages"] = script_messages
templates.env.globals["viewer_words"] = viewer_words
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
    # Where the language chooser brings the visitor back to: portal URLs hold only
    # opaque ids (a view, a document), never a name or a search term.
    query = request.url.query
    values.setdefault("here", request.url.path + (f"?{query}" if query else ""))
    response = templates.TemplateResponse(request, template, values, status_code=status_code)
    response.headers["Content-Security-Policy"] = PORTAL_CSP
    response.headers["Content-Language"] = i18n.current_language()
    return response
