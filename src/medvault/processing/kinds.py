"""The names of the job kinds, in one place.

Enqueuers (an upload, the portal) and the wiring that registers handlers
(``medvault.jobs``) both name kinds; keeping the strings here means neither imports
the other, and a typo is an import error rather than a job no worker ever claims.
"""

from __future__ import annotations

SCAN = "scan"
FHIR_SHA1 = "fhir-sha1"
RECONCILE = "reconcile"
FHIR_DRAFT_EXPIRY = "fhir-draft-expiry"
INTEGRITY_SCRUB = "integrity-scrub"
AUDIT_VERIFY = "audit-verify"
PREVIEW = "preview"
TEXT = "text"
SEARCH_INDEX = "search-index"
SEARCH_REINDEX = "search-reindex"


def scan_key(version_id: object) -> str:
    """One live scan per version: a rescan re-arms the same row."""
    return f"{SCAN}:{version_id}"


def sha1_key(version_id: object) -> str:
    return f"{FHIR_SHA1}:{version_id}"


def preview_key(version_id: object) -> str:
    return f"{PREVIEW}:{version_id}"


def text_key(version_id: object) -> str:
    return f"{TEXT}:{version_id}"


def search_index_key(document_id: object) -> str:
    """One pending reindex per document: several changes before it runs need one pass."""
    return f"{SEARCH_INDEX}:{document_id}"


APPRAISAL = "appraisal"
DESTROY = "destroy"


def destroy_key(appraisal_id: object) -> str:
    return f"{DESTROY}:{appraisal_id}"


PATIENT_EXPORT = "patient-export"
EXPORT_EXPIRY = "export-expiry"


def export_key(export_id: object) -> str:
    return f"{PATIENT_EXPORT}:{export_id}"


FHIR_BULK_EXPORT = "fhir-bulk-export"
FHIR_BULK_EXPORT_EXPIRY = "fhir-bulk-export-expiry"


def bulk_export_key(export_id: object) -> str:
    return f"{FHIR_BULK_EXPORT}:{export_id}"
