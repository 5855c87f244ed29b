"""Turning ids into what a person reads: uploader names, patient names, type labels."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.orm import Session

from medvault.audit.context import AuditContext
from medvault.auth import repository as auth_repository
from medvault.auth.principal import Principal, PrincipalKind
from medvault.documents.compose.document_types import DOCUMENT_TYPES
from medvault.documents.models import DeriveState
from medvault.documents.schemas import DocumentOut
from medvault.patients import repository as patients
from medvault.patients import service as patient_service
from medvault.patients.models import Patient
from medvault.runtime import Runtime

# What the portal calls the document types people meet most; the API accepts any
# LOINC code, and an unlisted one is shown as its code.
TYPE_LABELS: dict[str, str] = {
    "11502-2": "Laboratory report",
    "18748-4": "Diagnostic imaging report",
    "18842-5": "Discharge summary",
    "11488-4": "Consult note",
    "11506-3": "Progress note",
    "57133-1": "Referral note",
    "34108-1": "Outpatient note",
    "60591-5": "Patient summary",
    "28570-0": "Procedure note",
    "51851-4": "Administrative note",
    "72170-4": "Photograph",
    "57833-6": "Prescription",
    "55188-7": "Patient data document",
    **{option.code: option.label for option in DOCUMENT_TYPES},
}

# The same types in a patient's words: "Test results", not "Laboratory report".
PATIENT_TYPE_LABELS: dict[str, str] = {
    "11502-2": "Test results",
    "18748-4": "Scan or X-ray report",
    "18842-5": "Letter when leaving hospital",
    "11488-4": "Letter from a specialist",
    "11506-3": "Notes from an appointment",
    "57133-1": "Referral letter",
    "34108-1": "Clinic letter",
    "60591-5": "Health summary",
    "28570-0": "Notes about a procedure",
    "51851-4": "Form or administrative letter",
    "34117-2": "Notes from an examination",
    "72170-4": "Photo",
    "57833-6": "Prescription or list of medicines",
    "55188-7": "Other document",
}

# "What is this?" when patients upload to their own record: what they would call it,
# each stored as the LOINC document type a clinician would have chosen.
PATIENT_UPLOAD_CHOICES: tuple[tuple[str, str], ...] = (
    ("34108-1", "A letter from a doctor or hospital"),
    ("11502-2", "Test results"),
    ("18748-4", "A scan or X-ray report"),
    ("72170-4", "A photo (for example of a rash or a wound)"),
    ("57833-6", "A prescription or a list of medicines"),
    ("55188-7", "Something else"),
)


def type_label(code: str, *, for_patient: bool = False) -> str:
    """What a reader calls a LOINC document type; patients get everyday words."""
    if for_patient:
        return PATIENT_TYPE_LABELS.get(code) or TYPE_LABELS.get(code, "Document")
    return TYPE_LABELS.get(code, f"Type {code}")


def type_choices(*, for_patient: bool) -> list[tuple[str, str]]:
    """The type filter's and the upload form's options, alphabetical by what they say."""
    labels = PATIENT_TYPE_LABELS if for_patient else TYPE_LABELS
    return sorted(labels.items(), key=lambda kv: kv[1])


def actor_names(runtime: Runtime, actor_ids: Iterable[str]) -> dict[str, str]:
    """Names people read for actor ids.

    "user:<id>" → "Dr Priya Patel, GP" (else the username); "api_token:<id>" → "API token
    <name>".
    """
    users: set[uuid.UUID] = set()
    tokens: set[uuid.UUID] = set()
    for actor in set(actor_ids):
        kind, _, raw = actor.partition(":")
        try:
            subject = uuid.UUID(raw)
        except ValueError:
            continue
        if kind == PrincipalKind.USER.value:
            users.add(subject)
        elif kind == PrincipalKind.API_TOKEN.value:
            tokens.add(subject)
    names: dict[str, str] = {}
    with runtime.auth.read_session() as session:
        for user in auth_repository.users_by_ids(session, users).values():
            names[f"{PrincipalKind.USER.value}:{user.id}"] = user.label
        for token_id in tokens:
            token = auth_repository.token_by_id(session, token_id)
            if token is not None:
                names[f"{PrincipalKind.API_TOKEN.value}:{token.id}"] = f"API token “{token.name}”"
    return names


def actor_name(names: dict[str, str], actor_id: str) -> str:
    if actor_id in names:
        return names[actor_id]
    kind = actor_id.partition(":")[0]
    return {"system": "the vault", "signed_url": "a download link"}.get(kind, "someone removed")


def readable_patients_by_id(
    session: Session, principal: Principal, patient_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Patient]:
    """The patients among ``patient_ids`` the caller may see (the documents' own scope)."""
    return {p.id: p for p in patients.readable_many(session, principal, set(patient_ids))}


def patient_label(patient: Patient | None) -> str:
    if patient is None:
        return ""
    return patient_service.display_name(patient.family_name, patient.given_name)


def patient_choices(
    session: Session, principal: Principal, context: AuditContext, *, limit: int = 500
) -> list[dict[str, str]]:
    """Patients in the caller's scope for a <select>, by family name (an audited search)."""
    found = patient_service.search(
        session=session,
        principal=principal,
        identifier=None,
        limit=limit,
        cursor=None,
        context=context,
    )
    ordered = sorted(found.items, key=lambda p: (p.family_name.lower(), p.given_name.lower()))
    return [
        {
            "id": str(p.id),
            "label": patient_service.display_name(p.family_name, p.given_name, p.identifier.value),
        }
        for p in ordered
    ]


# Short labels for the type icon shown where there is no preview.
_FILE_KINDS = {
    "application/pdf": "PDF",
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/tiff": "TIFF",
    "application/dicom": "DICOM",
}


def file_kind(content_type: str) -> str:
    return _FILE_KINDS.get(content_type, content_type.rsplit("/", 1)[-1][:8].upper() or "FILE")


# What people call each kind of file (a media type stays under "Technical details").
_FILE_KIND_WORDS = {
    "application/pdf": "PDF document",
    "image/png": "Image",
    "image/jpeg": "Photo",
    "image/tiff": "Scanned image",
    "application/dicom": "Medical image (DICOM)",
}


def file_kind_words(content_type: str) -> str:
    return _FILE_KIND_WORDS.get(content_type, "File")


def shows_thumbnail(document: DocumentOut, *, content: bool, readable: bool) -> bool:
    """Whether a list row shows the document's thumbnail rather than its type icon.

    Only for callers who may read content (a thumbnail shows it), for a current version
    the scanner lets through, and only once the preview exists: an <img> for a missing
    one would cost a request, an audited refusal and a broken-image box.
    """
    return (
        content
        and readable
        and document.status != "deleted"
        and document.derived.preview == DeriveState.READY
    )


# documents.models.DeriveState -> what the portal says about a missing preview.
_PREVIEW_NOTES = {
    "none": "No preview has been made of this file.",
    "pending": "The preview is being made. Reload the page in a moment.",
    "unsupported": "Files of this type have no preview. Download the file to open it.",
    "failed": "No preview could be made of this file. Download it to open it.",
}
_REASONS = {
    "too-many-pixels": "the image is too large",
    "too-large": "the file is too large",
    "unreadable": "the file could not be read",
    "timeout": "it took too long",
    "cpu": "it took too long",
    "memory": "it needed too much memory",
}


def preview_note(state: str, reason: str | None, *, readable: bool) -> str:
    if not readable:
        return "There is no preview while the file cannot be opened."
    note = _PREVIEW_NOTES.get(state, "No preview is available.")
    if state == "failed" and reason in _REASONS:
        note = f"No preview could be made of this file: {_REASONS[reason]}. Download it to open it."
    return note


def text_note(state: str, source: str | None, reason: str | None) -> str:
    """How the document's words got into search (or why they did not)."""
    if state == "ready":
        origin = {
            "text-layer": "from the PDF's own text",
            "ocr": "read from the image by text recognition (OCR)",
            "mixed": "from the PDF's text, and by OCR for scanned pages",
        }.get(source or "", "extracted")
        suffix = " (first pages only)" if reason == "truncated" else ""
        return f"Yes, {origin}{suffix}."
    if state == "pending":
        return "Being extracted."
    if state == "failed":
        return "No: the text could not be extracted."
    if state == "unsupported":
        return "No: files of this type have no text."
    return "No: only the title and description are searchable."
