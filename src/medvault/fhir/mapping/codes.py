"""Code systems, value maps and version ids shared by the resource mappings."""

from __future__ import annotations

from datetime import UTC, datetime

from medvault.documents.models import Classification

LOINC = "http://loinc.org"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
# The vault's own code system for DocumentReference.category (see CATEGORY_BY_TYPE).
CATEGORY_SYSTEM = "urn:medvault:document-category"
ACTOR_SYSTEM = "urn:medvault:actor"
SHA256_EXTENSION = "urn:medvault:fhir:attachment-sha256"
# Records governance on a DocumentReference (README "Records governance"): sub-extensions
# `class` (valueCode), `retainUntil` (valueDate, absent: kept indefinitely) and
# `destroyed` (valueDateTime, on a destroyed record's tombstone).
RETENTION_EXTENSION = "urn:medvault:fhir:retention"
RFC3986 = "urn:ietf:rfc:3986"

# The document type given to a Binary stored before its DocumentReference describes
# it: LOINC's most generic document code.
DRAFT_TYPE = "55188-7"

# Display names of common LOINC document types (others are served without one).
LOINC_DISPLAY = {
    "11502-2": "Laboratory report",
    "11526-1": "Pathology study",
    "18748-4": "Diagnostic imaging study",
    "18842-5": "Discharge summary",
    "11488-4": "Consult note",
    "11506-3": "Progress note",
    "34117-2": "History and physical note",
    "28570-0": "Procedure note",
    "11504-8": "Surgical operation note",
    "34133-9": "Summary of episode note",
    "57833-6": "Prescription for medication",
    "60591-5": "Patient summary Document",
    DRAFT_TYPE: "Patient data Document",
}

# DocumentReference.category follows from the type, so it is always consistent with
# it and searchable without a column of its own. Unlisted types are "other".
CATEGORY_DISPLAY = {
    "clinical-note": "Clinical note",
    "laboratory": "Laboratory",
    "imaging": "Imaging",
    "medication": "Medication",
    "summary": "Summary",
    "other": "Other",
}
CATEGORY_BY_TYPE = {
    "11502-2": "laboratory",
    "11526-1": "laboratory",
    "18748-4": "imaging",
    "18842-5": "clinical-note",
    "11488-4": "clinical-note",
    "11506-3": "clinical-note",
    "34117-2": "clinical-note",
    "28570-0": "clinical-note",
    "11504-8": "clinical-note",
    "34133-9": "clinical-note",
    "57833-6": "medication",
    "60591-5": "summary",
}
OTHER_CATEGORY = "other"

CONFIDENTIALITY_CODE = {
    Classification.NORMAL: ("N", "normal"),
    Classification.RESTRICTED: ("R", "restricted"),
    Classification.VERY_RESTRICTED: ("V", "very restricted"),
}
CLASSIFICATION_BY_CODE = {code: value for value, (code, _) in CONFIDENTIALITY_CODE.items()}


def category_of(document_type: str) -> str:
    return CATEGORY_BY_TYPE.get(document_type, OTHER_CATEGORY)


def types_in_category(category: str) -> frozenset[str]:
    return frozenset(t for t, c in CATEGORY_BY_TYPE.items() if c == category)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def version_token(updated_at: datetime) -> str:
    """``meta.versionId`` of a document: its last change, in microseconds since 1970.

    Every change to a document, through FHIR or REST (a new version, a delete, a
    restore, a metadata update), moves ``updated_at``, so a client's If-Match can
    never be satisfied by a document that changed since it read it.
    """
    return str((updated_at.astimezone(UTC) - _EPOCH) // _MICROSECOND)


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
