"""Dates and times in query parameters and bodies: ISO 8601 only, as the OpenAPI says.

pydantic also reads a bare number as a Unix timestamp (``created_before=0.5`` was the
first of January 1970), which the documented ``format: date-time`` does not allow and
no client means on purpose: such a value is refused with a 422 instead.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import BeforeValidator

from medvault.kit.i18n import N_

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date_time(value: object) -> object:
    if isinstance(value, str | bytes) and not _ISO_DATE.match(str(value).strip()):
        raise ValueError(N_("use an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z"))
    return value


def _iso_date(value: object) -> object:
    # In a JSON body a number would otherwise be read as a Unix timestamp too.
    if isinstance(value, int | float):
        raise ValueError(N_("use an ISO 8601 date, e.g. 2024-05-01"))
    if isinstance(value, str | bytes) and not _ISO_DATE.fullmatch(str(value).strip()):
        raise ValueError(N_("use an ISO 8601 date, e.g. 2024-05-01"))
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_date_time)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
