"""The kick-off's parameters, checked: what to export, since when, in which format.

The rules here are the ones the OpenAPI document states (``fhir.openapi``), so a
request the document calls valid is accepted and one it calls invalid is refused:
``Prefer`` and ``_type`` are matched by the very patterns published there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from medvault.kit.problems import Problem

PATIENT = "Patient"
DOCUMENT_REFERENCE = "DocumentReference"
# Every resource type the vault serves that belongs to a patient's compartment, in the
# order their files are listed in the manifest.
EXPORTABLE_TYPES = (PATIENT, DOCUMENT_REFERENCE)

PREFER_PATTERN = r"^respond-async(,\s*handling=(strict|lenient))?$"
TYPE_PATTERN = r"^(Patient|DocumentReference)(,(Patient|DocumentReference))*$"
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
# An unencoded "+" in a query string arrives as a space (curl users meet this first).
_FORMAT_ALIASES = {"application/fhir ndjson": "application/fhir+ndjson"}
# RFC 3339 date-time (a FHIR instant): a time zone is required.
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
# Bulk Data parameters this server does not implement: refused rather than ignored, as
# the IG asks (a client would otherwise get more data than it filtered for).
UNSUPPORTED = frozenset(
    {
        "_typeFilter",
        "_elements",
        "patient",
        "includeAssociatedData",
        "organizeOutputBy",
        "allowPartialManifests",
        "_until",
    }
)


class ExportRequestInvalid(Problem):
    """A kick-off the server cannot run as asked (wrong Prefer, type, format or instant)."""

    status, slug, title = 400, "fhir-export-invalid", "The export request cannot be run"


@dataclass(frozen=True)
class ExportParameters:
    types: tuple[str, ...]
    since: datetime | None


def check_prefer(value: str | None) -> None:
    if value is None or re.fullmatch(PREFER_PATTERN, value.strip()) is None:
        raise ExportRequestInvalid(
            "Bulk export is asynchronous: send 'Prefer: respond-async'.",
            expression=["Prefer"],
        )


def _types(value: str | None) -> tuple[str, ...]:
    if value is None:
        return EXPORTABLE_TYPES
    named = value.split(",")
    unknown = sorted({name for name in named if name not in EXPORTABLE_TYPES})
    if unknown or not value:
        shown = ", ".join(unknown) or "(empty)"
        raise ExportRequestInvalid(
            f"_type names resource types this server does not export: {shown}. "
            f"Exportable: {', '.join(EXPORTABLE_TYPES)}.",
            expression=["_type"],
        )
    return tuple(kind for kind in EXPORTABLE_TYPES if kind in named)


def parse_instant(value: str) -> datetime:
    """A FHIR instant (RFC 3339 with a time zone) as an aware UTC datetime."""
    text = value.strip()
    if len(text) > 25 and text[-6] == " ":
        text = text[:-6] + "+" + text[-5:]  # "+01:00" sent unencoded
    if _INSTANT.match(text) is None:
        raise ExportRequestInvalid(
            "_since must be a FHIR instant with a time zone, e.g. 2026-01-31T12:00:00Z.",
            expression=["_since"],
        )
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExportRequestInvalid(
            "_since is not a real date and time.", expression=["_since"]
        ) from None
    return parsed.astimezone(UTC)


def parse(params: Sequence[tuple[str, str]]) -> ExportParameters:
    """The kick-off's query parameters; anything the server would not honour is a 400."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name in UNSUPPORTED:
            raise ExportRequestInvalid(
                f"{name} is not supported by this server.", expression=[name]
            )
        if name in ("_type", "_since", "_outputFormat"):
            if name in seen:
                raise ExportRequestInvalid(f"{name} is given twice.", expression=[name])
            seen[name] = value
    output_format = seen.get("_outputFormat")
    if output_format is not None:
        output_format = _FORMAT_ALIASES.get(output_format, output_format)
        if output_format not in OUTPUT_FORMATS:
            raise ExportRequestInvalid(
                "_outputFormat must be application/fhir+ndjson (or application/ndjson, ndjson).",
                expression=["_outputFormat"],
            )
    since = seen.get("_since")
    return ExportParameters(
        types=_types(seen.get("_type")),
        since=parse_instant(since) if since is not None else None,
    )
