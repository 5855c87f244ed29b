"""Turning ids into what a person reads: uploader names, patient names, type labels."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.orm import Session

from medvault.access.policy import resolve_patient_scope
from medvault.audit.context import AuditContext
from medvault.auth import repository as auth_repository
from medvault.auth.principal import Principal, PrincipalKind
from medvault.documents.compose.document_types import DOCUMENT_TYPES
from medvault.documents.models import DeriveState
from medvault.documents.schemas import DocumentOut
from medvault.kit.i18n import N_, gettext
from medvault.kit.i18n import gettext as _
from medvault.patients import repository as patients
from medvault.patients import service as patient_service
from medvault.patients.models import Patient
from medvault.runtime import Runtime

# What the portal calls the document types people meet most; the API accepts any
# LOINC code, and an unlisted one is shown as its code.
TYPE_LABELS: dict[str, str] = {
    "11502-2": N_("Laboratory report"),
    "18748-4": N_("Diagnostic imaging report"),
    "18842-5": N_("Discharge summary"),
    "11488-4": N_("Consult note"),
    "11506-3": N_("Progress note"),
    "57133-1": N_("Referral note"),
    "34108-1": N_("Outpatient note"),
    "60591-5": N_("Patient summary"),
    "28570-0": N_("Procedure note"),
    "51851-4": N_("Administrative note"),
    "72170-4": N_("Photograph"),
    "57833-6": N_("Prescription"),
    "55188-7": N_("Patient data document"),
    **{option.code: option.label for option in DOCUMENT_TYPES},
}

# The same types in a patient's words: "Test results", not "Laboratory report".
PATIENT_TYPE_LABELS: dict[str, str] = {
    "11502-2": N_("Test results"),
    "18748-4": N_("Scan or X-ray report"),
    "18842-5": N_("Letter when leaving hospital"),
    "11488-4": N_("Letter from a specialist"),
    "11506-3": N_("Notes from an appointment"),
    "57133-1": N_("Referral letter"),
    "34108-1": N_("Clinic letter"),
    "60591-5": N_("Health summary"),
    "28570-0": N_("Notes about a procedure"),
    "51851-4": N_("Form or administrative letter"),
    "34117-2": N_("Notes from an examination"),
    "72170-4": N_("Photo"),
    "57833-6": N_("Prescription or list of medicines"),
    "55188-7": N_("Other document"),
}

# "What is this?" when patients upload to their own record: what they would call it,
# each stored as the LOINC document type a clinician would have chosen.
PATIENT_UPLOAD_CHOICES: tuple[tuple[str, str], ...] = (
    ("34108-1", N_("A letter from a doctor or hospital")),
    ("11502-2", N_("Test results")),
    ("18748-4", N_("A scan or X-ray report")),
    ("72170-4", N_("A photo (for example of a rash or a wound)")),
    ("57833-6", N_("A prescription or a list of medicines")),
    ("55188-7", N_("Something else")),
)


def type_label(code: str, *, for_patient: bool = False) -> str:
    """What a reader calls a LOINC document type; patients get everyday words."""
    label = (PATIENT_TYPE_LABELS.get(code) if for_patient else None) or TYPE_LABELS.get(code)
    if label is not None:
        return gettext(label)
    return _("Document") if for_patient else _("Type %(code)s", code=code)


def type_choices(*, for_patient: bool) -> list[tuple[str, str]]:
    """The type filter's and the upload form's options, alphabetical by what they say."""
    labels = PATIENT_TYPE_LABELS if for_patient else TYPE_LABELS
    shown = [(code, gettext(label)) for code, label in labels.items()]
    return sorted(shown, key=lambda kv: kv[1])


def patient_upload_choices() -> list[tuple[str, str]]:
    """:data:`PATIENT_UPLOAD_CHOICES` in the reader's language, in their own order."""
    return [(code, gettext(label)) for code, label in PATIENT_UPLOAD_CHOICES]


def actor_names(runtime: Runtime, actor_ids: Iterable[str]) -> dict[str, str]:
    """Names people read for actor ids.

    "user:<id>" → "Dr Priya Patel, GP" (else the username); "api_token:<id>" → "API token
    <name>".
    """
    users: set[uuid.UUID] = set()
    tokens: set[uuid.UUID] = set()
    for actor in set(actor_ids):
        kind, _sep, raw = actor.partition(":")
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
                names[f"{PrincipalKind.API_TOKEN.value}:{token.id}"] = _(
                    "API token “%(name)s”", name=token.name
                )
    return names


# Actors that are not a user or token of today, by the kind in their id.
_ACTOR_KINDS = {"system": N_("the vault"), "signed_url": N_("a download link")}


def actor_name(names: dict[str, str], actor_id: str) -> str:
    if actor_id in names:
        return names[actor_id]
    kind = actor_id.partition(":")[0]
    return gettext(_ACTOR_KINDS.get(kind, N_("someone removed")))


def readable_patients_by_id(
    session: Session, principal: Principal, patient_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Patient]:
    """The patients among ``patient_ids`` the caller may see (the documents' own scope).

    Names come from the patient database, joined to the documents here, by id.
    """
    wanted = set(patient_ids)
    scope = resolve_patient_scope(session, principal, among=wanted)
    return {p.id: p for p in patients.readable_many(session, scope, wanted)}


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
    return _FILE_KINDS.get(content_type, content_type.rsplit("/", 1)[-1][:8].upper() or _("FILE"))


# What people call each kind of file (a media type stays under "Technical details").
_FILE_KIND_WORDS = {
    "application/pdf": N_("PDF document"),
    "image/png": N_("Image"),
    "image/jpeg": N_("Photo"),
    "image/tiff": N_("Scanned image"),
    "application/dicom": N_("Medical image (DICOM)"),
}


def file_kind_words(content_type: str) -> str:
    return gettext(_FILE_KIND_WORDS.get(content_type, N_("File")))


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
    "none": N_("No preview has been made of this file."),
    "pending": N_("The preview is being made. Reload the page in a moment."),
    "unsupported": N_("Files of this type have no preview. Download the file to open it."),
    "failed": N_("No preview could be made of this file. Download it to open it."),
}
_REASONS = {
    "too-many-pixels": N_("the image is too large"),
    "too-large": N_("the file is too large"),
    "unreadable": N_("the file could not be read"),
    "timeout": N_("it took too long"),
    "cpu": N_("it took too long"),
    "memory": N_("it needed too much memory"),
}


def preview_note(state: str, reason: str | None, *, readable: bool) -> str:
    if not readable:
        return _("There is no preview while the file cannot be opened.")
    if state == "failed" and reason in _REASONS:
        return _(
            "No preview could be made of this file: %(reason)s. Download it to open it.",
            reason=gettext(_REASONS[reason]),
        )
    return gettext(_PREVIEW_NOTES.get(state, N_("No preview is available.")))


def text_note(state: str, source: str | None, reason: str | None) -> str:
    """How the document's words got into search (or why they did not)."""
    if state == "ready":
        origin = {
            "text-layer": _("from the PDF's own text"),
            "ocr": _("read from the image by text recognition (OCR)"),
            "mixed": _("from the PDF's text, and by OCR for scanned pages"),
        }.get(source or "") or _("extracted")
        if reason == "truncated":
            return _("Yes, %(origin)s (first pages only).", origin=origin)
        return _("Yes, %(origin)s.", origin=origin)
    if state == "pending":
        return _("Being extracted.")
    if state == "failed":
        return _("No: the text could not be extracted.")
    if state == "unsupported":
        return _("No: files of this type have no text.")
    return _("No: only the title and description are searchable.")
