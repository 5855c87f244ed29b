"""The REST routes' special answers, for ``ops.openapi`` (FHIR keeps its own table).

Only what a route answers *beyond* the common set derived from its shape goes here:
conflicts, gone documents, byte ranges, the real media types of document content,
and request bodies FastAPI cannot see because the route streams them itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from medvault.auth.passwords import MIN_PASSWORD_LENGTH
from medvault.config import Settings
from medvault.documents.schemas import DocumentFields, VersionFields
from medvault.ops.openapi import CLEAN_TEXT_PATTERN, ConstraintTable, Special, SpecialTable

# The characters the control-character rule refuses (kit.text), as a regex class body.
_CONTROL = CLEAN_TEXT_PATTERN[3:-3]

CONTENT_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"type": "string", "description": "The SHA-256 of the version's bytes"},
    "Accept-Ranges": {"type": "string", "enum": ["bytes"]},
    "Content-Disposition": {"type": "string"},
}
_BYTES: dict[str, Any] = {"type": "string", "format": "binary"}
# Range and the validators are free text on the wire; the route parses them.
_CONTENT_PARAMETERS: dict[str, dict[str, Any]] = {
    "Range": {"description": "`bytes=first-last`, `bytes=first-` or `bytes=-suffix`"},
}


def document_types(app: FastAPI) -> tuple[str, ...]:
    """The media types a document can have here: the deployment's allowed upload types."""
    return tuple(app.state.runtime.settings.allowed_types)


def content_route(app: FastAPI, *, extra: frozenset[int] = frozenset()) -> Special:
    """A route that serves a version's bytes: 200/206 in the document's own type."""
    return Special(
        statuses=frozenset({410, 416}) | extra,
        content_statuses={
            206: "The requested byte range (Content-Range says which)",
            304: "Not modified (If-None-Match matched the ETag)",
        },
        success_media_types=document_types(app),
        success_schema=_BYTES,
        success_headers=CONTENT_HEADERS,
        parameters=_CONTENT_PARAMETERS,
    )


# Previews are WebP; 410: the version's content was destroyed, 403: quarantined.
PREVIEW_ROUTE = Special(
    statuses=frozenset({403, 410}),
    success_media_types=("image/webp",),
    success_schema=_BYTES,
    success_headers={"ETag": {"type": "string", "description": "The SHA-256 of the image"}},
)


def _fields_schema(model: type[DocumentFields] | type[VersionFields]) -> dict[str, Any]:
    # The model the upload is validated with, so the documented fields cannot drift.
    schema = model.model_json_schema()
    schema.pop("title", None)
    definitions = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, definitions)
    return inlined


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """Replace pydantic's local ``#/$defs/…`` references (enums here) by their schema."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(definitions[ref.rsplit("/", 1)[-1]], definitions), **rest}
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


def upload_body(app: FastAPI, *, new_document: bool) -> dict[str, Any]:
    fields = _fields_schema(DocumentFields if new_document else VersionFields)
    form = {
        **fields,
        "properties": {"file": _BYTES, **fields.get("properties", {})},
        "required": ["file", *fields.get("required", [])],
        # Other form fields are ignored, but checked for control characters like the rest.
        "propertyNames": {"pattern": CLEAN_TEXT_PATTERN},
        "additionalProperties": {"type": "string", "pattern": CLEAN_TEXT_PATTERN},
    }
    raw = {media: {"schema": _BYTES} for media in document_types(app)}
    return {
        "required": True,
        "description": "multipart/form-data with a `file` field, or the raw file as the "
        "body in one of the accepted types (metadata then goes in query parameters). "
        "The type is decided from the content's first bytes, never from the header.",
        "content": {"multipart/form-data": {"schema": form}, **raw},
    }


def upload_route(app: FastAPI, *, new_document: bool) -> Special:
    fields = _fields_schema(DocumentFields if new_document else VersionFields)
    # Raw uploads: the same fields as query parameters, with the same constraints.
    parameters = {
        name: {k: v for k, v in prop.items() if k not in ("title", "default")}
        for name, prop in fields.get("properties", {}).items()
    }
    return Special(
        # 408: the upload took longer than the reconciler allows (documents.arrival).
        statuses=frozenset({408, 409, 410, 415}),
        request_body=upload_body(app, new_document=new_document),
        parameters=parameters,
    )


def _tus_body(*, required: bool) -> dict[str, Any]:
    return {
        "required": required,
        "description": "The file's next bytes, from Upload-Offset on.",
        "content": {"application/offset+octet-stream": {"schema": _BYTES}},
    }


# Header values the tus routes parse themselves (uploads.protocol).
_TUS_VERSION: dict[str, Any] = {
    "Tus-Resumable": {
        "description": "Always `1.0.0`; missing or other: 412",
        "required": True,
        "type": "string",
        "enum": ["1.0.0"],
    }
}
_SIZE = "^[0-9]{1,19}$"
_TUS_HEADERS: dict[str, dict[str, Any]] = {
    **_TUS_VERSION,
    "Upload-Length": {
        "description": "The file's size in bytes",
        "type": "string",
        "pattern": _SIZE,
    },
    "Upload-Defer-Length": {
        "description": "`1`: the length is sent later",
        "type": "string",
        "enum": ["1"],
    },
    "Upload-Checksum": {
        "description": "`sha1 <base64>` or `sha256 <base64>` of this request's body",
        "type": "string",
        "pattern": "^(sha1 [A-Za-z0-9+/]{27}=|sha256 [A-Za-z0-9+/]{43}=)$",
    },
    "Upload-Metadata": {
        "description": "Comma-separated `key base64(value)` pairs: the document's fields",
        "type": "string",
    },
}
_TUS_PATCH_HEADERS: dict[str, dict[str, Any]] = {
    **_TUS_HEADERS,
    "Upload-Offset": {
        "description": "Where this body starts in the file",
        "required": True,
        "type": "string",
        "pattern": _SIZE,
    },
}


def rest_specials() -> SpecialTable:
    token_form: dict[str, Any] = {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password"]},
                        # An empty field is a missing field to the form parser.
                        "username": {
                            "type": "string",
                            "minLength": 1,
                            "pattern": CLEAN_TEXT_PATTERN,
                        },
                        "password": {
                            "type": "string",
                            "minLength": 1,
                            "format": "password",
                            "pattern": CLEAN_TEXT_PATTERN,
                        },
                        "scope": {"type": "string"},
                    },
                }
            }
        },
    }
    return {
        ("GET", "/metrics"): Special(
            success_media_types=("text/plain",), success_schema={"type": "string"}
        ),
        ("GET", "/readyz"): Special(
            content_statuses={503: "A dependency is unreachable (which one, in `checks`)"}
        ),
        ("POST", "/api/v1/auth/token"): Special(
            statuses=frozenset({401, 429, 503}), request_body=token_form
        ),
        ("POST", "/api/v1/auth/refresh"): Special(statuses=frozenset({401})),
        # A refresh token alone ends its session: a stale access token must not stop it.
        ("POST", "/api/v1/auth/logout"): Special(statuses=frozenset({401}), optional_auth=True),
        ("POST", "/api/v1/users"): Special(statuses=frozenset({409})),
        ("POST", "/api/v1/care-teams"): Special(statuses=frozenset({409})),
        ("POST", "/api/v1/patients"): Special(statuses=frozenset({409})),
        ("GET", "/api/v1/patients"): Special(
            statuses=frozenset({400}),
            # patients.service.parse_identifier_query: split at the last "|".
            parameters={"identifier": {"pattern": f"^[^{_CONTROL}]+\\|[^|{_CONTROL}]+$"}},
        ),
        ("GET", "/api/v1/documents"): Special(statuses=frozenset({400, 404})),
        ("GET", "/api/v1/audit/checkpoint"): Special(statuses=frozenset({404})),
        ("GET", "/api/v1/audit/proof/inclusion"): Special(statuses=frozenset({400, 404})),
        ("GET", "/api/v1/audit/proof/consistency"): Special(statuses=frozenset({400, 404})),
        ("DELETE", "/api/v1/documents/{document_id}"): Special(statuses=frozenset({409})),
        ("POST", "/api/v1/documents/{document_id}/restore"): Special(
            statuses=frozenset({409, 410})
        ),
        # A patient's export: the link is the credential (403 signed-url-*), and works once
        # (410 export-gone); what it serves is the AES ZIP.
        ("GET", "/api/v1/exports/download/{token}"): Special(
            statuses=frozenset({403, 410}),
            success_media_types=("application/zip",),
            success_schema={"type": "string", "format": "binary"},
            success_headers={
                "Content-Disposition": {"type": "string"},
                "Repr-Digest": {"type": "string"},
            },
        ),
        # Records governance: a hold names a patient or document that may not exist; a
        # decision meets a hold, a moved date or an appraisal already decided.
        ("POST", "/api/v1/governance/holds"): Special(statuses=frozenset({404})),
        ("POST", "/api/v1/governance/holds/{hold_id}/release"): Special(statuses=frozenset({409})),
        ("POST", "/api/v1/governance/appraisals/{appraisal_id}/approve"): Special(
            statuses=frozenset({409})
        ),
        ("POST", "/api/v1/governance/appraisals/{appraisal_id}/keep"): Special(
            statuses=frozenset({409})
        ),
        ("POST", "/api/v1/documents/{document_id}/download-url"): Special(
            statuses=frozenset({410})
        ),
        ("POST", "/api/v1/documents"): lambda app: upload_route(app, new_document=True),
        ("POST", "/api/v1/documents/{document_id}/versions"): lambda app: upload_route(
            app, new_document=False
        ),
        ("GET", "/api/v1/documents/{document_id}/content"): content_route,
        ("GET", "/api/v1/documents/{document_id}/versions/{number}/content"): content_route,
        # A decision on a version that is not (or no longer) quarantined.
        ("POST", "/api/v1/quarantine/{document_id}/versions/{number}/release"): Special(
            statuses=frozenset({409})
        ),
        ("POST", "/api/v1/quarantine/{document_id}/versions/{number}/destroy"): Special(
            statuses=frozenset({409})
        ),
        ("GET", "/api/v1/documents/{document_id}/preview"): PREVIEW_ROUTE,
        ("GET", "/api/v1/documents/{document_id}/versions/{number}/preview"): PREVIEW_ROUTE,
        # tus resumable uploads: the protocol's own answers (uploads.protocol).
        ("POST", "/api/v1/uploads"): Special(
            statuses=frozenset({409, 410, 412, 415, 423, 460}),
            request_body=_tus_body(required=False),
            parameters=_TUS_HEADERS,
        ),
        ("HEAD", "/api/v1/uploads/{upload_id}"): Special(
            statuses=frozenset({410, 412}), parameters=_TUS_VERSION
        ),
        ("PATCH", "/api/v1/uploads/{upload_id}"): Special(
            statuses=frozenset({400, 409, 410, 412, 413, 415, 423, 460}),
            request_body=_tus_body(required=True),
            parameters=_TUS_PATCH_HEADERS,
        ),
        ("DELETE", "/api/v1/uploads/{upload_id}"): Special(
            statuses=frozenset({412, 423}), parameters=_TUS_VERSION
        ),
        # No token: the link is the credential, refused with 403 signed-url-*.
        ("GET", "/api/v1/download/{token}"): lambda app: content_route(app, extra=frozenset({403})),
    }


# Whitespace that str.strip() removes and the control-character rule lets through.
_SPACE = "[\\t\\n\\r ]*"


_NULL = {"type": "null"}
_QUERY_FIELDS = ("document_type", "created_from", "created_to")
_HOLD_SCOPES = [
    {
        "properties": {
            "scope": {"const": "patient"},
            "patient_id": {"type": "string"},
            "document_id": _NULL,
            **dict.fromkeys(_QUERY_FIELDS, _NULL),
        },
        "required": ["patient_id"],
    },
    {
        "properties": {
            "scope": {"const": "document"},
            "document_id": {"type": "string"},
            "patient_id": _NULL,
            **dict.fromkeys(_QUERY_FIELDS, _NULL),
        },
        "required": ["document_id"],
    },
    {
        "properties": {"scope": {"const": "query"}, "patient_id": _NULL, "document_id": _NULL},
        "anyOf": [
            {"properties": {name: {"type": "string"}}, "required": [name]} for name in _QUERY_FIELDS
        ],
    },
]


def rest_constraints(settings: Settings) -> ConstraintTable:
    """Rules the services enforce on request bodies beyond their pydantic models.

    The key ``(component, "")`` adds keywords to the component itself.
    """
    return {
        # auth.passwords.MIN_PASSWORD_LENGTH; and text like any other.
        ("UserCreate", "password"): {
            "minLength": MIN_PASSWORD_LENGTH,
            "pattern": CLEAN_TEXT_PATTERN,
        },
        ("DownloadUrlRequest", "expires_in"): {"maximum": settings.download_url_max_ttl_seconds},
        # auth.users.create: a patient user, and only a patient user, names a patient.
        ("UserCreate", ""): {
            "if": {"properties": {"role": {"const": "patient"}}, "required": ["role"]},
            "then": {"required": ["patient_id"], "properties": {"patient_id": {"type": "string"}}},
            "else": {"properties": {"patient_id": {"type": "null"}}},
        },
        # auth.users.USERNAME_PATTERN, after strip() and lower().
        ("UserCreate", "username"): {"pattern": f"^{_SPACE}[A-Za-z0-9._-]{{3,64}}{_SPACE}$"},
        # auth.users.EMAIL_PATTERN (checked after lower-casing).
        ("UserCreate", "email"): {
            "pattern": f"^{_SPACE}[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]{{1,64}}@"
            f"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\\.)+[A-Za-z]{{2,63}}{_SPACE}$"
        },
        # governance.schemas.HoldCreate: each scope takes its own fields, and only them.
        ("HoldCreate", ""): {"oneOf": _HOLD_SCOPES},
        # patients.schemas.Identifier: "absolute URI" there means a colon and, once
        # stripped, no whitespace.
        ("Identifier", "system"): {
            "pattern": f"^{_SPACE}[^\\s{_CONTROL}]*:[^\\s{_CONTROL}]*{_SPACE}$"
        },
        # patients.schemas.Identifier: no "|" (the search form's separator), and some
        # visible character once stripped.
        ("Identifier", "value"): {"pattern": f"^[^|{_CONTROL}]*[^\\s|{_CONTROL}][^|{_CONTROL}]*$"},
        # patients.schemas.PatientCreate: not before 1850 (the future moves with the
        # clock: no schema holds that bound).
        ("PatientCreate", "birth_date"): {
            "pattern": "^(18[5-9][0-9]|19[0-9]{2}|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}$"
        },
    }
