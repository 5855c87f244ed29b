"""FHIR formats: the JSON media types, ``Accept`` parsing and the JSON encoding.

The vault speaks FHIR JSON only. Which of these a request gets is decided from the
request in ``wire/responses.py``; this module imports no HTTP framework, so the
problem types and resource mapping that use it stay importable without Starlette.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medvault.kit.problems import Problem

FHIR_JSON = "application/fhir+json"
PLAIN_JSON = "application/json"
FHIR_VERSION = "4.0.1"
# Every spelling of "JSON" that FHIR clients send in _format or Accept.
JSON_FORMATS = frozenset({FHIR_JSON, PLAIN_JSON, "application/json+fhir", "json", "text/json"})


class NotAcceptable(Problem):
    status, slug, title = 406, "not-acceptable", "The requested format is not available"


def media_ranges(header: str) -> list[tuple[str, float]]:
    """``Accept`` as (media type, q) pairs; unparseable q values count as 1."""
    ranges = []
    for part in header.split(","):
        pieces = [piece.strip() for piece in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 1.0
        # fhirVersion and charset parameters are fine: the vault serves 4.0 in UTF-8.
        ranges.append((media, quality))
    return ranges


def dumps(resource: Mapping[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
