"""Resource ids in URLs: anything that is not a UUID is simply not found."""

from __future__ import annotations

import uuid

from medvault.kit.i18n import N_
from medvault.kit.problems import NotFound


def parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(N_("No resource with this id.")) from None
