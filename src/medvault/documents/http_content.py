"""The HTTP side of content reads, for every route that serves a version's bytes.

One dependency reads ``Range``, ``If-None-Match`` and ``If-Range`` into the parsed
:class:`ReadConditions` the reading service takes, so the REST, FHIR Binary, portal and
signed-link routes cannot drift apart in what they honour. :func:`streamed` turns the
service's plan into the response. The service itself (``documents.reading``) never
sees FastAPI or Starlette.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header
from fastapi.responses import Response, StreamingResponse

from medvault.documents.content import ContentPlan
from medvault.kit.read_conditions import ReadConditions


def read_conditions(
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> ReadConditions:
    return ReadConditions.parse(
        range_header=range_header, if_none_match=if_none_match, if_range=if_range
    )


# A content route's range and validators: add as a parameter, ``conditions: Conditions``.
Conditions = Annotated[ReadConditions, Depends(read_conditions)]


def streamed(plan: ContentPlan) -> Response:
    """The response for a planned read: headers only (304), or the body streamed."""
    if plan.body is None:
        return Response(status_code=plan.status, headers=plan.headers)
    return StreamingResponse(
        plan.body,
        status_code=plan.status,
        headers=plan.headers,
        media_type=plan.headers["Content-Type"],
    )
