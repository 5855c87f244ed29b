"""Errors on portal pages: the same problems as the API, shown as a page a person reads.

A document that does not exist and one the user may not see produce the same page,
byte for byte apart from the request id: the portal never hints that a record exists.
Scripts on the portal (uploads) ask for JSON and get the problem+json body instead.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from medvault.kit.i18n import translate
from medvault.kit.problem_handlers import problem_response
from medvault.kit.problems import Problem
from medvault.web.templating import render


def _wants_html(request: Request) -> bool:
    # The portal's own scripts ask for JSON; everything else a browser does wants a page.
    accept = request.headers.get("accept", "")
    return "application/json" not in accept and "application/problem+json" not in accept


def _login_redirect(request: Request) -> Response:
    # Only the path comes along: portal paths hold ids, never names or search terms.
    target = request.url.path
    location = "/login" if target in ("/", "/login") else f"/login?next={quote(target, safe='/')}"
    return RedirectResponse(location, status_code=303)


# A version's content refused for its malware scan (documents.reading): the page leads
# back to the document, whose page explains and offers what can be done.
_SCAN_REFUSALS = frozenset({"quarantined", "content-destroyed", "scan-pending"})
_CONTENT_ROUTE = re.compile(r"^(/documents/[0-9a-fA-F-]{36})/(?:download|view)$")


def _document_page(problem: Problem, request: Request) -> str | None:
    if problem.slug not in _SCAN_REFUSALS:
        return None
    match = _CONTENT_ROUTE.match(request.url.path)
    return match.group(1) if match else None


def render_portal_problem(problem: Problem, request: Request) -> Response:
    if not _wants_html(request):
        # The portal's own scripts show the title or detail to a person, as they are:
        # in the page's language. The type, status and extensions stay as the API's.
        return problem_response(problem, request, words=translate)
    if problem.status == 401 and request.method == "GET":
        return _login_redirect(request)
    response = render(
        request,
        "error.html",
        {
            "status": problem.status,
            # The problem's English (the API's words), shown in the reader's language.
            "title": translate(problem.title),
            "detail": translate(problem.detail) if problem.detail else problem.detail,
            "logged_out": problem.status == 401,
            "document_page": _document_page(problem, request),
            # The language chooser goes home from here: an error page echoes nothing of
            # the address asked for, so "not found" and "not yours" stay byte-identical.
            "here": "/",
        },
        status_code=problem.status,
    )
    for name, value in problem.headers.items():
        response.headers.setdefault(name, value)
    return response
