"""The CapabilityStatement: what this server really supports, and nothing more.

Every interaction and search parameter listed here is implemented and tested
(``tests/fhir/wire/test_capability.py`` checks the list against the routes); anything not
listed is not offered.
"""

from __future__ import annotations

from typing import Any

from medvault import __version__
from medvault.config import Settings
from medvault.fhir.wire.media import FHIR_JSON, FHIR_VERSION

# When this statement's content last changed (a FHIR dateTime).
PUBLISHED = "2026-11-23"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
_EXPORT_DOCUMENTATION = (
    "FHIR Bulk Data export (asynchronous; Prefer: respond-async). _type (Patient, "
    "DocumentReference), _since and _outputFormat (application/fhir+ndjson) are supported. "
    "Poll the Content-Location; the NDJSON files need the same token and expire after "
    "MEDVAULT_BULK_EXPORT_TTL_SECONDS."
)


def _param(name: str, kind: str, documentation: str) -> dict[str, str]:
    return {"name": name, "type": kind, "documentation": documentation}


_COMMON = {
    "versioning": "versioned-update",
    "readHistory": False,
    "updateCreate": False,
    "conditionalCreate": False,
    "conditionalRead": "not-supported",
    "conditionalUpdate": False,
    "conditionalDelete": "not-supported",
}
_NO_WRITES = {
    **_COMMON,
    "versioning": "versioned",
}


def _document_reference() -> dict[str, Any]:
    return {
        "type": "DocumentReference",
        "documentation": (
            "One per version of a vault document: the current version under the document's "
            "id (status current, or entered-in-error once deleted), earlier ones under "
            "{id}.{n} (superseded), each replacing the one before. Content is a Binary."
        ),
        "interaction": [
            {"code": "read"},
            {
                "code": "vread",
                "documentation": "The current meta.versionId only; earlier metadata is not kept.",
            },
            {
                "code": "update",
                "documentation": "Metadata only (type, title, description, securityLabel); "
                "If-Match is required.",
            },
            {"code": "delete", "documentation": "Marks the document entered-in-error."},
            {
                "code": "create",
                "documentation": "With attachment.data, or attachment.url to a "
                "Binary stored first.",
            },
            {"code": "search-type"},
        ],
        **_COMMON,
        "referencePolicy": ["literal", "local"],
        "searchParam": [
            _param("_id", "token", "The DocumentReference id."),
            _param("patient", "reference", "Patient/{id}, or the id."),
            _param("subject", "reference", "Patient/{id}, or the id."),
            _param("type", "token", "LOINC document type, e.g. http://loinc.org|11502-2."),
            _param("category", "token", "urn:medvault:document-category (follows the type)."),
            _param("date", "date", "When the version was stored; eq ne gt lt ge le sa eb."),
            _param("status", "token", "current | superseded | entered-in-error."),
            _param(
                "_content",
                "string",
                "IHE MHD Full-Text Search Option: words in the title, description, file "
                'name and extracted text of the current version ("a phrase", -excluded, '
                "a or b; commas are alternatives too). Results are ranked by relevance "
                "unless _sort is given; text is searched only where content indexing is "
                "on and the caller may read content.",
            ),
        ],
    }


def _binary() -> dict[str, Any]:
    return {
        "type": "Binary",
        "documentation": (
            "A version's bytes: raw (with Range) unless Accept or _format asks for FHIR JSON, "
            "which is served up to MEDVAULT_FHIR_BINARY_JSON_MAX_BYTES. Create with the raw "
            "body and X-Security-Context (Patient/{id}: a new document; DocumentReference/{id}: "
            "a new version), or a Binary resource."
        ),
        "interaction": [
            {"code": "read"},
            {"code": "vread", "documentation": "Versions never change: versionId is 1."},
            {"code": "create"},
        ],
        **_NO_WRITES,
    }


def _patient() -> dict[str, Any]:
    return {
        "type": "Patient",
        "documentation": "The vault's patient registry, read-only over FHIR.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        **_NO_WRITES,
        "operation": [
            {
                "name": "export",
                "definition": f"{BULK_DATA}/OperationDefinition/patient-export",
                "documentation": "Every patient the caller reaches. " + _EXPORT_DOCUMENTATION,
            }
        ],
        "searchParam": [
            _param("_id", "token", "The Patient id."),
            _param("identifier", "token", "system|value, value, or system|."),
            _param("name", "string", "Each word starts the given or family name."),
            _param("family", "string", "Starts the family name."),
            _param("given", "string", "Starts the given name."),
            _param("birthdate", "date", "Dates only; eq ne gt lt ge le sa eb."),
        ],
    }


def _audit_event() -> dict[str, Any]:
    return {
        "type": "AuditEvent",
        "documentation": "The tamper-evident audit log, for auditors (audit:read).",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        **_NO_WRITES,
        "searchParam": [
            _param("_id", "token", "The event id."),
            _param("patient", "reference", "Events about Patient/{id}."),
            _param("date", "date", "When the event was recorded."),
            _param(
                "agent",
                "reference",
                "Actor id (user:…, api_token:…), or "
                "agent:identifier=urn:medvault:actor|{actor id}.",
            ),
            _param("entity", "reference", "DocumentReference/{id}, Patient/{id}, Binary/{id}."),
            _param("subtype", "token", "The vault's action, e.g. document.read."),
            _param("outcome", "token", "0 success, 4 denied, 8 failed."),
        ],
    }


def capability_statement(*, base: str, settings: Settings) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "id": "medvault",
        "url": f"{base}/metadata",
        "version": __version__,
        "name": "MedvaultFhirServer",
        "title": "medvault FHIR R4 interface",
        "status": "active",
        "experimental": False,
        "date": PUBLISHED,
        "publisher": "medvault",
        "description": (
            "Clinical documents of an encrypted, audited vault. Every read and write goes "
            "through the vault's access policy and leaves an audit event."
        ),
        "kind": "instance",
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "software": {"name": "medvault", "version": __version__},
        "implementation": {"description": "medvault document vault", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Searches page with opaque keyset cursors: follow the Bundle's next and "
                    "previous links. _count (at most 100), _sort and _total=none are "
                    "supported; unknown parameters are ignored and reported unless "
                    "Prefer: handling=strict."
                ),
                "security": {
                    "cors": bool(settings.cors_origins),
                    "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "OAuth"}]}],
                    "description": (
                        "Authorization: Bearer with an access token from POST "
                        "/api/v1/auth/token (OAuth2 password grant) or an API token. API "
                        "tokens may carry SMART scopes such as user/DocumentReference.read "
                        "or patient/*.read; see the README's FHIR section."
                    ),
                },
                "resource": [_document_reference(), _binary(), _patient(), _audit_event()],
                "interaction": [
                    {
                        "code": "transaction",
                        "documentation": "Binary and DocumentReference creates, linked by "
                        "urn:uuid, stored atomically.",
                    }
                ],
                "operation": [
                    {
                        "name": "export",
                        "definition": f"{BULK_DATA}/OperationDefinition/export",
                        "documentation": "Everything: only for callers that reach every "
                        "patient (system/ or * API tokens). " + _EXPORT_DOCUMENTATION,
                    }
                ],
            }
        ],
    }
