"""Compose a clinical document in the portal: form → validated draft → PDF → stored bytes.

The portal's "Create Document" flow calls, in order:

* ``DOCUMENT_TYPES`` for the type ``<select>``; ``parse_form(form)`` on submit, which
  raises ``DraftInvalid`` whose ``field_errors`` maps form field names to sentences;
* ``render_preview(...)`` to show the PDF, and ``confirmation_fields(rendered)`` as the
  hidden inputs of the confirm form (``to_form(draft)`` re-fills the form for "Edit");
* ``parse_confirmation(form)`` then ``confirm(...)`` on "Confirm & upload", which returns
  the exact previewed bytes or refuses; see ``preview`` for why this needs no server state.

Modules: ``document_types`` (the LOINC list), ``text`` (text field rules), ``fonts``,
``draft`` (the model), ``messages`` (plain-sentence errors), ``form`` (flat fields),
``pdf`` (rendering) and ``preview`` (preview → confirm).
"""

from medvault.documents.compose.document_types import DOCUMENT_TYPES, DocumentTypeOption
from medvault.documents.compose.draft import (
    MAX_ROWS,
    AllergyEntry,
    AllergySeverity,
    ClinicalDocumentDraft,
    MedicationEntry,
    ObservationEntry,
)
from medvault.documents.compose.form import parse_form, to_form
from medvault.documents.compose.messages import NON_FIELD, DraftInvalid, field_errors
from medvault.documents.compose.pdf import render_pdf
from medvault.documents.compose.preview import (
    PDF_CONTENT_TYPE,
    PREVIEW_TTL,
    Confirmation,
    PreviewChanged,
    PreviewExpired,
    PreviewStampInvalid,
    RenderedDocument,
    confirm,
    confirmation_fields,
    parse_confirmation,
    render_preview,
)

__all__ = [
    "DOCUMENT_TYPES",
    "MAX_ROWS",
    "NON_FIELD",
    "PDF_CONTENT_TYPE",
    "PREVIEW_TTL",
    "AllergyEntry",
    "AllergySeverity",
    "ClinicalDocumentDraft",
    "Confirmation",
    "DocumentTypeOption",
    "DraftInvalid",
    "MedicationEntry",
    "ObservationEntry",
    "PreviewChanged",
    "PreviewExpired",
    "PreviewStampInvalid",
    "RenderedDocument",
    "confirm",
    "confirmation_fields",
    "field_errors",
    "parse_confirmation",
    "parse_form",
    "render_pdf",
    "render_preview",
    "to_form",
]
