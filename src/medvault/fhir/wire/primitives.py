"""FHIR primitive formats the server writes and reads: ``instant``, and the weak ETags
that carry a resource's ``meta.versionId`` (``W/"3"``) in ETag and If-Match."""

from __future__ import annotations

from datetime import UTC, datetime


def instant(value: datetime) -> str:
    """A FHIR instant in UTC, to the millisecond."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def weak_etag(version_id: str) -> str:
    return f'W/"{version_id}"'


def parse_etag(header: str) -> str | None:
    """The version id in ``W/"3"`` or ``"3"`` (as FHIR clients send If-Match)."""
    text = header.strip()
    if text.startswith("W/"):
        text = text[2:]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return None
