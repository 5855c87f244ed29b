"""The document types the "Create Document" form offers, as LOINC document codes.

The list is deliberately short and fixed: each entry is a LOINC *document ontology*
code for a note a clinician writes by hand. Lab reports and imaging reports come from
other systems as files and are uploaded, not composed, so they are not offered here.
The upload API still accepts any well-formed LOINC code; this list only bounds the form.
"""

from __future__ import annotations

from dataclasses import dataclass

from medvault.kit.i18n import N_


@dataclass(frozen=True)
class DocumentTypeOption:
    code: str
    label: str


# Order is the order of the <select>: the most common notes first. Labels are English
# (the composed PDF's words); the portal shows them in the reader's language.
DOCUMENT_TYPES: tuple[DocumentTypeOption, ...] = (
    DocumentTypeOption("11506-3", N_("Progress note")),
    DocumentTypeOption("11488-4", N_("Consult note")),
    DocumentTypeOption("34108-1", N_("Outpatient note")),
    DocumentTypeOption("18842-5", N_("Discharge summary")),
    DocumentTypeOption("57133-1", N_("Referral note")),
    DocumentTypeOption("34117-2", N_("History and physical note")),
    DocumentTypeOption("28570-0", N_("Procedure note")),
)

_LABELS = {option.code: option.label for option in DOCUMENT_TYPES}


def is_offered(code: str) -> bool:
    return code in _LABELS


def label_for(code: str) -> str:
    """The human label; ``KeyError`` for a code the form does not offer."""
    return _LABELS[code]
