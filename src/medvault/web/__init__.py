"""The portal: server-rendered pages for patients, clinicians, admins and auditors.

Pages call the same services as the REST API (never SQL), through the same access
policy and audit trail. Static assets are part of the package: no CDN, no build step.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from medvault.kit.problem_handlers import register_problem_renderer
from medvault.web.errors import render_portal_problem
from medvault.web.pages import (
    admin,
    archive,
    audit,
    audit_log,
    auth,
    compose,
    compose_drafts,
    documents,
    language,
    my_data,
    patients,
    previews,
    resumable,
    timeline,
    upload,
)

STATIC_DIR = Path(__file__).parent / "static"
# Errors under these paths are shown as pages; everything else keeps problem+json
# (the API, FHIR, and any route an operator or a test mounts beside the portal).
PORTAL_PREFIXES = (
    "/login",
    "/logout",
    "/documents",
    "/upload",
    "/compose",
    "/patients",
    "/emergency",
    "/admin/",
    "/audit",
    "/timeline",
    "/my-data",
)


# The PDF viewer's frame document (static/pdf-viewer.html): sandboxed by its own policy
# too, so it stays in an opaque origin even if opened on its own, and framable only by
# the portal. 'self' still names the portal's static files, which it loads with CORS.
VIEWER_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "font-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'; sandbox allow-scripts"
)
# What that opaque-origin frame loads from here: module scripts and pdf.js's fonts are
# fetched in CORS mode, and these files are the same for everyone.
_CROSS_ORIGIN_STATIC = ("/static/pdfjs/", "/static/pdf-viewer.mjs")


class _CachedStatic(StaticFiles):
    """Static files may be cached for an hour (pages and data never are)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]

        async def send_with_cache(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Cache-Control"] = "public, max-age=3600"
                if path == "/static/pdf-viewer.html":
                    headers["Content-Security-Policy"] = VIEWER_CSP
                    headers["X-Frame-Options"] = "SAMEORIGIN"
                elif path.startswith(_CROSS_ORIGIN_STATIC):
                    headers["Access-Control-Allow-Origin"] = "*"
            await send(message)

        await super().__call__(scope, receive, send_with_cache)


def install_portal(app: FastAPI) -> None:
    for module in (
        auth,
        language,
        archive,
        documents,
        previews,
        upload,
        resumable,
        compose,
        compose_drafts,
        patients,
        timeline,
        admin,
        audit,
        audit_log,
        my_data,
    ):
        app.include_router(module.router)
    app.mount("/static", _CachedStatic(directory=STATIC_DIR), name="static")
    for prefix in PORTAL_PREFIXES:
        register_problem_renderer(app, prefix, render_portal_problem)
