"""schemathesis hooks for the vault: loaded by the CLI through ``SCHEMATHESIS_HOOKS``.

* Document bodies are generated as real files of their declared type (PDF, PNG…): the
  vault decides a file's type from its first bytes, which no JSON Schema describes.
* ``positive_data_acceptance_stateless`` replaces schemathesis' ``positive_data_acceptance``
  (run with ``--exclude-checks positive_data_acceptance``). It is the same check, except
  for refusals that depend on the server's *state* or on bytes a schema cannot describe,
  each named below by its stable problem type. Any other refusal of a schema-valid
  request still fails the run.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Problem types a schema-valid request may still get, and why no schema can prevent it.
STATE_DEPENDENT_REFUSALS = frozenset(
    {
        # A well-formed id that names nothing on this server.
        "unknown-patient",
        "unknown-clinician",
        "fhir-unknown-reference",
        # Opaque values only the server issues (a page cursor, a signed link).
        "invalid-cursor",
        "signed-url-invalid",
        # Free search text whose words are all exclusions (`-a`) or punctuation: what
        # counts as a word (Unicode letters and digits) is beyond a JSON Schema pattern.
        "invalid-search-text",
        # Depends on the stored document: its length, its version, whether it is deleted.
        "range-not-satisfiable",
        "precondition-failed",
        "document-deleted",
        "duplicate-document",
        # A date of death or end of treatment is checked against the stored birth date.
        "date-before-birth",
        # The file's type comes from its bytes; a FHIR resource is validated against the
        # FHIR R4 specification, which the OpenAPI document references, not restates.
        "unsupported-media-type",
        "empty-file",
        "fhir-invalid-resource",
        "fhir-unprocessable",
        "fhir-not-supported",
    }
)

_MAGIC = {
    "application/pdf": b"%PDF-1.7\n",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/tiff": b"II*\x00\x08\x00\x00\x00",
    "application/dicom": b"\x00" * 128 + b"DICM",
}


def _file_of_type(head: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=256).map(lambda tail: head + tail)


for _media, _magic in _MAGIC.items():
    schemathesis.openapi.media_type(_media, _file_of_type(_magic))
# tus PATCH bodies: a file's next bytes, any bytes.
schemathesis.openapi.media_type(
    "application/offset+octet-stream", st.binary(min_size=0, max_size=256)
)


def problem_type(body: bytes) -> str | None:
    """The stable problem type of a problem+json or OperationOutcome body."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("type"), str):
        return str(document["type"]).rsplit(":", 1)[-1]
    for issue in document.get("issue") or []:
        for coding in (issue.get("details") or {}).get("coding") or []:
            if coding.get("system") == "urn:medvault:problem":
                return str(coding.get("code"))
    return None


def _upload_metadata_only_in_query(case: schemathesis.Case[Any], body: bytes) -> bool:
    """A raw upload without ``patient_id``/``document_type`` in its query.

    Multipart uploads carry them in the form, raw uploads in the query: OpenAPI cannot
    make a query parameter required for one body media type only, so the document
    marks them optional and says so in their description.
    """
    if not case.operation.path.startswith("/api/v1/documents") or case.media_type in (
        None,
        "multipart/form-data",
    ):
        return False
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return False
    return bool(errors) and all(
        error.get("type") == "missing" and error.get("loc") in (["patient_id"], ["document_type"])
        for error in errors
    )


# What a tus creation refuses that its headers' schema cannot rule out: Upload-Metadata
# values are base64 of the document's fields (a pattern cannot say "base64 of a UUID"),
# and Upload-Length and Upload-Defer-Length are each optional but one is required.
_TUS_CREATION_REFUSALS = frozenset({"validation-error", "invalid-upload-header"})


def _tus_creation_fields(case: schemathesis.Case[Any], body: bytes) -> bool:
    return (
        case.operation.path == "/api/v1/uploads"
        and case.operation.method.upper() == "POST"
        and problem_type(body) in _TUS_CREATION_REFUSALS
    )


def _control_character_deep_in_fhir_resource(body: bytes) -> bool:
    """The control-character rule reaching a string nested inside a FHIR resource.

    FHIR bodies are open R4 resources; their schema states the rule for element names
    only, since JSON Schema cannot bound every nested string without fixing the depth.
    """
    return problem_type(body) == "invalid-characters" and b"(field: resource)" in body


# Dates bounded by today: the bound moves with the clock, so no schema holds it.
_NOT_IN_THE_FUTURE = ("birth_date", "deceased_on", "treatment_ended_on")


def _validation_errors(body: bytes) -> list[dict[str, Any]]:
    try:
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError):
        return []
    return [error for error in errors if isinstance(error, dict)]


def _date_in_the_future(body: bytes) -> bool:
    errors = _validation_errors(body)
    return bool(errors) and all(
        error.get("loc", [None, None])[-1] in _NOT_IN_THE_FUTURE
        and "future" in error.get("msg", "")
        for error in errors
    )


def _reversed_date_range(body: bytes) -> bool:
    """A hold's created_from after its created_to: an order between two fields, which
    JSON Schema cannot state for dates."""
    errors = _validation_errors(body)
    return bool(errors) and all("after created_to" in error.get("msg", "") for error in errors)


@schemathesis.check
def positive_data_acceptance_stateless(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        body = response.content
        if (
            problem_type(body) in STATE_DEPENDENT_REFUSALS
            or _upload_metadata_only_in_query(case, body)
            or _tus_creation_fields(case, body)
            or _control_character_deep_in_fhir_resource(body)
            or _date_in_the_future(body)
            or _reversed_date_range(body)
        ):
            return None
        raise
