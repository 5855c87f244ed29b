"""How ``/fhir`` is described in the OpenAPI document (see ``ops.openapi``).

Errors there are OperationOutcomes in ``application/fhir+json``; resources come as
``application/fhir+json`` (or ``application/json`` when a client asks for it). The
bodies are FHIR R4 resources, validated against the FHIR specification itself: the
schemas below state the envelope (``resourceType`` and what this server requires) and
point to the specification for the rest rather than restating it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from medvault.fhir.bulk.parameters import OUTPUT_FORMATS, PREFER_PATTERN, TYPE_PATTERN
from medvault.fhir.bulk.service import NDJSON
from medvault.fhir.wire.media import FHIR_JSON, PLAIN_JSON
from medvault.ops.openapi import CLEAN_TEXT_PATTERN, Dialect, Special, SpecialTable
from medvault.ops.openapi_routes import CONTENT_HEADERS, document_types

_FHIR_DOCS = "https://hl7.org/fhir/R4/"
_MEDIA = (FHIR_JSON, PLAIN_JSON)


def _resource(resource_type: str, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"A FHIR R4 {resource_type} ({_FHIR_DOCS}{resource_type.lower()}.html).",
        "required": ["resourceType", *required],
        "properties": {"resourceType": {"type": "string", "enum": [resource_type]}},
        # Every string inside, at any depth, is free of control characters (kit.text);
        # JSON Schema states that for the element names here and leaves the rest to R4.
        "propertyNames": {"pattern": CLEAN_TEXT_PATTERN},
        "additionalProperties": True,
    }


OPERATION_OUTCOME: dict[str, Any] = {
    "type": "object",
    "title": "OperationOutcome",
    "description": "Every error under /fhir. `issue[].details.coding` (system "
    "urn:medvault:problem) carries the same stable problem type as the REST API.",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {
                        "type": "string",
                        "enum": ["fatal", "error", "warning", "information"],
                    },
                    "code": {"type": "string"},
                    "details": {"type": "object"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

FHIR_RESOURCE: dict[str, Any] = {
    "type": "object",
    "description": f"A FHIR R4 resource or Bundle ({_FHIR_DOCS}).",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "additionalProperties": True,
}


def dialect() -> Dialect:
    # 406: _format or Accept names only formats other than FHIR JSON.
    return Dialect(
        prefix="/fhir",
        error_media_types=(FHIR_JSON,),
        error_schema_name="OperationOutcome",
        error_schema=OPERATION_OUTCOME,
        success_media_types=_MEDIA,
        success_schema=FHIR_RESOURCE,
        extra_statuses=frozenset({406}),
        components={**REQUEST_RESOURCES, "BulkExportManifest": EXPORT_MANIFEST},
    )


# Request bodies as components, so both JSON media types name one model (generated
# clients otherwise build the same model twice).
REQUEST_RESOURCES: dict[str, dict[str, Any]] = {
    "FhirBundle": _resource("Bundle", required=("type",)),
    "FhirDocumentReference": _resource("DocumentReference"),
    "FhirBinary": _resource("Binary", required=("contentType", "data")),
}


def _json_body(component: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{component}"}
    return {"required": True, "content": {media: {"schema": schema} for media in _MEDIA}}


_SEARCH_FORM: dict[str, Any] = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "description": "FHIR search parameters, as in the GET search's query",
                "propertyNames": {"pattern": CLEAN_TEXT_PATTERN},
                "additionalProperties": {"type": "string", "pattern": CLEAN_TEXT_PATTERN},
            }
        }
    },
}


def _binary_read(app: FastAPI) -> Special:
    # Raw bytes in the document's own type unless FHIR JSON is asked for (the resource form).
    return Special(
        statuses=frozenset({410, 416}),
        content_statuses={206: "The requested byte range", 304: "Not modified"},
        success_media_types=(*document_types(app), *_MEDIA),
        success_schema={},
        success_headers=CONTENT_HEADERS,
    )


def _binary_create(app: FastAPI) -> Special:
    binary = {"$ref": "#/components/schemas/FhirBinary"}
    raw = {
        media: {"schema": {"type": "string", "format": "binary"}} for media in document_types(app)
    }
    return Special(
        statuses=frozenset({408, 409, 415}),
        request_body={
            "required": True,
            "description": "The raw file (with X-Security-Context) or a Binary resource "
            "with base64 `data` and `securityContext`.",
            "content": {**{media: {"schema": binary} for media in _MEDIA}, **raw},
        },
        parameters={
            "X-Security-Context": {
                "description": "Patient/{id}: a new document of that patient; "
                "DocumentReference/{id}: a new version of that document",
                "pattern": "^(Patient|DocumentReference)/[A-Za-z0-9.-]{1,64}$",
            }
        },
    )


# Bulk Data export (fhir.bulk): the kick-off's parameters, by the patterns the route
# itself matches, so a request the document calls valid is one the server accepts.
_EXPORT_KICK_OFF = Special(
    statuses=frozenset({400}),
    parameters={
        "Prefer": {"required": True, "type": "string", "pattern": PREFER_PATTERN},
        "_outputFormat": {"type": "string", "enum": list(OUTPUT_FORMATS)},
        "_type": {"type": "string", "pattern": TYPE_PATTERN},
        "_since": {"type": "string", "format": "date-time"},
    },
    success_headers={
        "Content-Location": {"type": "string", "description": "The export's status URL"}
    },
)
EXPORT_MANIFEST: dict[str, Any] = {
    "type": "object",
    "title": "BulkExportManifest",
    "description": "The Bulk Data IG's complete-status manifest "
    "(https://hl7.org/fhir/uv/bulkdata/export.html#response---complete-status).",
    "required": ["transactionTime", "request", "requiresAccessToken", "output", "error"],
    "properties": {
        "transactionTime": {"type": "string"},
        "request": {"type": "string"},
        "requiresAccessToken": {"type": "boolean"},
        "output": {"type": "array", "items": {"type": "object"}},
        "error": {"type": "array", "items": {"type": "object"}},
    },
}
_EXPORT_STATUS = Special(
    # 200: the manifest (application/json); 202: an OperationOutcome saying how far.
    success_media_types=(FHIR_JSON, PLAIN_JSON),
    success_schema={
        "anyOf": [
            {"$ref": "#/components/schemas/BulkExportManifest"},
            {"$ref": "#/components/schemas/OperationOutcome"},
        ]
    },
    content_statuses={202: "Still running: X-Progress says how far, Retry-After when to ask"},
    success_headers={
        "X-Progress": {"type": "string", "description": "While running: how far it got"},
        "Retry-After": {"type": "string", "description": "While running: poll again after"},
    },
)
_EXPORT_FILE = Special(
    success_media_types=(NDJSON,),
    success_schema={
        "type": "string",
        "format": "binary",
        "description": "One FHIR resource per line",
    },
    success_headers={"ETag": {"type": "string", "description": "The SHA-256 of the file"}},
)


def fhir_specials() -> SpecialTable:
    return {
        ("GET", "/fhir/Patient/$export"): _EXPORT_KICK_OFF,
        ("GET", "/fhir/$export"): _EXPORT_KICK_OFF,
        ("GET", "/fhir/$export-status/{export_id}"): _EXPORT_STATUS,
        ("GET", "/fhir/$export-file/{export_id}/{name}"): _EXPORT_FILE,
        # 408: an upload too slow to commit safely (documents.arrival).
        ("POST", "/fhir"): Special(
            statuses=frozenset({404, 408, 409, 415}),
            request_body=_json_body("FhirBundle"),
        ),
        ("POST", "/fhir/DocumentReference"): Special(
            statuses=frozenset({404, 408, 409, 415}),
            request_body=_json_body("FhirDocumentReference"),
        ),
        ("PUT", "/fhir/DocumentReference/{resource_id}"): Special(
            statuses=frozenset({409, 410, 412, 415, 428}),
            request_body=_json_body("FhirDocumentReference"),
        ),
        ("DELETE", "/fhir/DocumentReference/{resource_id}"): Special(
            statuses=frozenset({409, 412})
        ),
        ("POST", "/fhir/DocumentReference/_search"): Special(
            statuses=frozenset({415}), request_body=_SEARCH_FORM
        ),
        ("POST", "/fhir/Patient/_search"): Special(
            statuses=frozenset({415}), request_body=_SEARCH_FORM
        ),
        ("POST", "/fhir/AuditEvent/_search"): Special(
            statuses=frozenset({415}), request_body=_SEARCH_FORM
        ),
        ("GET", "/fhir/DocumentReference"): Special(statuses=frozenset({400})),
        ("GET", "/fhir/Patient"): Special(statuses=frozenset({400})),
        ("GET", "/fhir/AuditEvent"): Special(statuses=frozenset({400})),
        ("GET", "/fhir/Binary/{resource_id}"): _binary_read,
        ("GET", "/fhir/Binary/{resource_id}/_history/{version_id}"): _binary_read,
        ("POST", "/fhir/Binary"): _binary_create,
    }
